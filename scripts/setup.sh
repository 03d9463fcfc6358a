#!/usr/bin/env bash
# Create ./.venv (if missing) and install keras-medseg with its test, JAX,
# torch, medical-IO, whole-slide (Dask, OpenSlide) and benchmark extras (the benchmarks need itk and nilearn).
# torch is pinned to the CPU build 2.13.0 first (PyTorch's CPU wheel index
# where no local wheel is at hand), so the `[torch]` extra does not pull a
# CUDA build. keras-cv is installed only so a test can compare our 2D
# non-max suppression with its layer; the library does not need it.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,jax,torch,keras-cv,medical,bench,slides]"
