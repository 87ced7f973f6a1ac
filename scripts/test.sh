#!/usr/bin/env bash
# Installs everything, then runs the test suite (real encodes, real mpv, real EXR files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
