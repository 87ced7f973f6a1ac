#!/usr/bin/env bash
# The main job on the built-in sample: encode -> transcode -> eval (a still, then a short video), metrics beside baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/itmfilter demo --out itmfilter-demo "$@"
