#!/usr/bin/env bash
# Create ./.venv (if missing) and install keras-medseg with its test, JAX,
# medical-IO and benchmark extras (the benchmarks need itk and nilearn).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,jax,medical,bench]"
