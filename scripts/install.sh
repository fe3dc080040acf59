#!/usr/bin/env bash
# Set-up in one step: a virtual environment in .venv with alaya installed from this checkout (editable),
# PyTorch's CPU build, and the extras named as arguments (test, hf, export, ray, ...).
#
#   bash scripts/install.sh            # alaya and its core dependencies
#   bash scripts/install.sh test       # and what the tests compare against
#
# The installer is uv (from PyPI; about 10x faster than pip here: 25 s instead of 4.5 min for the test
# set-up). PyTorch's CPU wheel comes from the folder in PIP_FIND_LINKS where a machine keeps wheels, else
# from PyTorch's own CPU index (uv's --torch-backend cpu: https://download.pytorch.org/whl/cpu, for torch
# only): PyPI's torch for Linux is the CUDA build, gigabytes more. For a GPU install, install torch first (pip install torch) and then the project
# (pip install -e .): nothing here replaces a torch that is already installed in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.13.0"
extras=$(IFS=,; echo "$*")
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check uv 2>&1 | grep -v "^WARNING: Location" || true
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  torch_from=(--find-links "$PIP_FIND_LINKS")
else
  torch_from=(--torch-backend cpu)  # uv takes torch (only) from https://download.pytorch.org/whl/cpu
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
if .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/uv pip install -q --python .venv/bin/python -e "$spec"
else
  .venv/bin/uv pip install -q --python .venv/bin/python "${torch_from[@]}" "$TORCH" -e "$spec"
fi
echo "installed into .venv: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), alaya $spec" >&2
