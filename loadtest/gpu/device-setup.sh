#!/usr/bin/env bash
# On the GPU machine (no internet): a venv that sees the machine's torch and takes everything else from the wheels
# fetch-wheels.sh downloaded. Usage: device-setup.sh WHEELS VENV   (then: make gpu-check VENV=VENV)
set -euo pipefail
wheels=${1:-.whl}
venv=${2:-.gl/venv}
# torch, its CUDA libraries and pip stay the machine's own (no ensurepip needed)
python3 -m venv --system-site-packages --without-pip "$venv"
pip=("$venv/bin/python" -m pip install -q --no-index --find-links "$wheels")
"${pip[@]}" -r "$wheels/requirements.txt"
# Their dependencies are the wheels above and the machine's torch and numpy; matplotlib stays out (charts later).
"${pip[@]}" --no-deps --no-build-isolation -e services/fastapi_llama -e .
touch "$venv/.installed"  # make: this venv is installed; do not build .venv's torch
"$venv/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'
