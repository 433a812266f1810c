#!/usr/bin/env bash
# Create .venv (if absent) and install the project's requirements into it.
# PyTorch: the versions pinned here are the ones this project is tested with on CPU machines;
# on a GPU machine any torch>=2.1 with its matching torchvision works.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
if ! python -c "import torch, torchvision" 2>/dev/null; then
  case "$(uname -m)" in
    x86_64) pip install -q torch==2.14.1 torchvision==0.29.1 ;;
    aarch64) pip install -q torch==2.9.1 torchvision==0.24.1 ;;
    *) pip install -q torch torchvision ;;
  esac
fi
pip install -q -r requirements.txt
