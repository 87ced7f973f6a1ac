#!/usr/bin/env bash
# Installs everything, then runs the test suite (real encodes, real mpv, real EXR files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One pytest-xdist worker a core (at most 4); tests/conftest.py keeps the tests that share a
# costly fixture on one worker.
exec .venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup "$@"
