"""A 1080p adaptation (and bf16 reconstruction) alone and beside a fixed competing job.

Users run things side by side: the cost of sharing the cores with one equal job should be
about 2x, not 10x. torch's OpenMP threads spin-wait for work by default (OMP_WAIT_POLICY
ACTIVE behaviour), which burns the cores a competing job needs; this benchmark measures
that, for each wait policy, in fresh processes (the policy is read when torch loads).

    python benchmarks/contention.py --repeats 3 --out docs/contention.md

Competing job: one process running float32 matrix products on 2 torch threads (the
shape of another itmfilter command or any numeric job), started before and killed after
each measured run. The picture is synthetic (smooth gradients and texture), so the script
needs no download.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import write_report  # benchmarks/report.py, beside this script

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, time
import numpy as np, torch
from itmfilter.colour.tonecurves import get_curve
from itmfilter.colour.transfer import eotf_inverse_st2084
from itmfilter.model.adapt import AdaptOptions, adapt
from itmfilter.model.inference import predict_pq
from itmfilter.model.initial import load_init
repeats = int(sys.argv[1])
w, h = (int(v) for v in sys.argv[2].split("x"))
yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
rng = np.random.default_rng(0)
base = np.stack([np.sin(xx / 97) ** 2, np.cos(yy / 61) ** 2, 0.5 + 0.5 * np.sin((xx + yy) / 173)], -1)
nits = (base * 400 + 1 + rng.random((h, w, 3), dtype=np.float32) * 20).astype(np.float32)
nits[300:420, 900:1300] = 2000.0
sdr = (np.round(np.clip(get_curve("bt2446a").forward(nits), 0, 1) * 255) / 255).astype(np.float32)
target = eotf_inverse_st2084(nits).astype(np.float32)
init, _ = load_init()
adapt(init, sdr[:256, :256], target[:256, :256], AdaptOptions(steps=20))  # warm-up
out = {"threads": torch.get_num_threads(), "adapt_s": [], "reconstruct_bf16_s": []}
for _ in range(repeats):
    out["adapt_s"].append(round(adapt(init, sdr, target, AdaptOptions()).seconds, 3))
    t0 = time.perf_counter()
    predict_pq(init, sdr, precision="bf16")
    out["reconstruct_bf16_s"].append(round(time.perf_counter() - t0, 3))
print(json.dumps(out))
"""

COMPETITOR = """
import torch
torch.set_num_threads(2)
a = torch.randn(768, 768)
while True:
    b = a @ a
"""


def _env(policy: str | None) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return env


def measure(policy: str | None, competing: bool, repeats: int, size: str = "1920x1080") -> dict:
    rival = None
    if competing:
        rival = subprocess.Popen([sys.executable, "-c", COMPETITOR], cwd=ROOT, env=_env(None))
        time.sleep(3.0)  # let it reach its loop
    try:
        proc = subprocess.run([sys.executable, "-c", WORKER, str(repeats), size], cwd=ROOT, env=_env(policy),
                              capture_output=True, text=True, check=True)
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, commit {rev}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default="default,PASSIVE", help="OMP_WAIT_POLICY values; 'default' leaves it unset")
    ap.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the adapted picture")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for name in args.policies.split(","):
        policy = None if name == "default" else name
        for competing in (False, True):
            load = os.getloadavg()[0]
            result = measure(policy, competing, args.repeats, args.size)
            row = {"policy": name, "competing": competing, "load_before": round(load, 2), **result}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        f"# A {args.size} adaptation beside a competing 2-thread job",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/contention.py --repeats {args.repeats} --size {args.size}`.",
        "Each row is a fresh process; `load` is the 1-minute load average before it started (other",
        "users' work included). Median of the repeats; all runs in brackets.",
        "",
        "| OMP_WAIT_POLICY | competing job | load | adaptation s | bf16 reconstruction s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['policy']} | {'yes' if r['competing'] else 'no'} | {r['load_before']} | "
                     f"{statistics.median(r['adapt_s']):.2f} {r['adapt_s']} | "
                     f"{statistics.median(r['reconstruct_bf16_s']):.2f} {r['reconstruct_bf16_s']} |")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
