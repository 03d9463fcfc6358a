#!/usr/bin/env bash
# The README's test command (and CI's): set up ./.venv, run the whole suite on
# the TensorFlow backend, then the backend-agnostic ops/layer/loss/zoo/explain
# tests (marker `backend_agnostic`) again on JAX and on torch (CPU). `ruff check` runs first, so a lint
# error fails CI. Any failure, or a run that collects no test at all (pytest
# exit 5), makes this script exit non-zero. Extra arguments go to every pytest
# run (e.g. `-x`, `-k unet`). The fast selection while developing (not CI):
# `.venv/bin/python -m pytest -n 2 -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
export KERAS_MEDSEG_FAST=1
WORKERS=${PYTEST_WORKERS:-2}
echo "== keras-medseg lint: ruff check =="
.venv/bin/ruff check .
echo "== keras-medseg tests: TensorFlow backend =="
KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -n "$WORKERS" --durations=15 -q "$@"
echo "== keras-medseg tests: JAX backend (backend-agnostic tests) =="
KERAS_BACKEND=jax .venv/bin/python -m pytest -n "$WORKERS" --durations=10 -q -m backend_agnostic "$@"
echo "== keras-medseg tests: torch backend (backend-agnostic tests) =="
# one torch (OpenMP) thread per pytest worker: with -n 2 on a shared 2-core machine, torch's default of one
# thread per core made the Dice+CE training test take 311 s instead of 6 s (oversubscribed OpenMP spin-waits)
OMP_NUM_THREADS=1 KERAS_BACKEND=torch .venv/bin/python -m pytest -n "$WORKERS" --durations=10 -q -m backend_agnostic "$@"
