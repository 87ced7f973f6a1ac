"""Per-rung filter time (ms) of the quality ladder at 1080p and 2160p, 1 and 2 torch threads.

    python benchmarks/ladder_timing.py
"""
import sys, time, statistics, json
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))
import numpy as np, torch, torch.nn.functional as F, av
from itmfilter.model import ITMNet, CONFIGS
from itmfilter.weights.init import load_init
from itmfilter import ladder
from itmfilter.play import sdr_frame_to_rgb, pq_to_yuv420p10
net0,_ = load_init(name="blind")
net = type(net0)(net0.config); 
try: raise RuntimeError("no adapted net given")
except Exception as e: print("using blind", e); net = net0
net.eval()
def med(f, n):
    f(); r=[]
    for _ in range(n):
        t=time.perf_counter(); f(); r.append(time.perf_counter()-t)
    return statistics.median(r)
res = {}
for th in (1, 2):
    torch.set_num_threads(th)
    for (h,w) in [(1080,1920),(2160,3840)]:
        s = np.random.default_rng(0).random((h,w,3), dtype=np.float32)
        n = 5 if h==1080 else 3
        for r in ladder.RUNG_NAMES:
            if h==2160 and r=="full" and th==1: n2=1
            else: n2=n
            res[f"{th}t {h}p {r}"] = med(lambda: ladder.apply_rung(net, s, r), n2)
            print(f"{th}t {h}p {r}", round(res[f"{th}t {h}p {r}"]*1000,1), "ms", flush=True)
        f = av.VideoFrame.from_ndarray((s*255).astype(np.uint8), format="rgb24").reformat(format="yuv420p")
        print(f"{th}t {h}p sdr_frame_to_rgb", round(med(lambda: sdr_frame_to_rgb(f), n)*1000,1), "ms")
        print(f"{th}t {h}p pq_to_yuv420p10", round(med(lambda: pq_to_yuv420p10(s), n)*1000,1), "ms", flush=True)
