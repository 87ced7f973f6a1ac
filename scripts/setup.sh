#!/usr/bin/env bash
# Installs everything itmfilter needs on a fresh Debian machine with Python 3.11:
# system packages (mpv + libmpv for playback, ffmpeg/ffprobe for checks; for the window
# tests, tests/test_play_window.py: Xvfb, xwd, ImageMagick, xdotool and Mesa's software
# OpenGL/EGL/Vulkan, which mpv's gpu-sw output renders with) and a virtual environment in
# .venv with the package and its test extras. Only what is missing is installed. Safe to
# run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v mpv >/dev/null 2>&1 || need_apt+=(mpv)
ldconfig -p 2>/dev/null | grep -q 'libmpv\.so' || need_apt+=(libmpv-dev)
command -v Xvfb >/dev/null 2>&1 || need_apt+=(xvfb)
command -v xwd >/dev/null 2>&1 || need_apt+=(x11-apps)
[ -x /usr/bin/convert ] || need_apt+=(imagemagick)  # not `command -v`: some images ship a convert wrapper without ImageMagick
command -v xdotool >/dev/null 2>&1 || need_apt+=(xdotool)
command -v xauth >/dev/null 2>&1 || need_apt+=(xauth)
ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || need_apt+=(libgl1-mesa-dri)
ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa\.so' || need_apt+=(libegl-mesa0)
ldconfig -p 2>/dev/null | grep -q 'libvulkan_lvp\.so' || need_apt+=(mesa-vulkan-drivers)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch is pinned (2.13.0, CPU wheel) before the rest so nothing pulls a CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
# gpu: triton, for the fused kernel's tests (run in Triton's interpreter on a CPU; a
# ~290 MB wheel, one download). ray: for --engine ray and its tests (about 340 MB with
# its dependencies). scripts/constraints.txt: the versions of the libraries whose builds
# change an encode's bytes that the benchmarks were measured with.
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[test,gpu,ray]"
# The CPU player's numba kernels, compiled into numba's cache now rather than at the first
# `itmfilter play --hdr` (~1.3 minutes on 2 cores the first time; seconds once cached).
.venv/bin/python -m itmfilter.render.precompile --quiet
