#!/usr/bin/env bash
# The README's test command (and CI's): set up ./.venv, run the whole suite on
# the TensorFlow backend, then the backend-agnostic ops/layer/loss/zoo/explain
# tests (marker `backend_agnostic`) again on JAX and on torch (CPU). `ruff check` runs first, so a lint
# error fails CI. Every phase runs even if an earlier one failed; any failure, or a phase that collects no
# test at all (pytest exit 5), makes this script exit non-zero. At the end it prints each phase's wall time,
# the slowest files and the slowest tests (scripts/suite_durations.py over the junit reports in
# .test-reports/). Extra arguments go to every pytest run (e.g. `-x`, `-k unet`). The fast selection while
# developing (not CI): `.venv/bin/python -m pytest -n 2 -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
start_all=$SECONDS
bash scripts/setup.sh
echo "== setup: $((SECONDS - start_all)) s"
export TF_CPP_MIN_LOG_LEVEL=2
export KERAS_MEDSEG_FAST=1
# TensorFlow's oneDNN kernels (on by default only on CPUs with AVX-512 VNNI/BF16): without them a strided
# Conv3D's gradient takes seconds on AMD EPYC (README, "Speed on the CPU").
export TF_ENABLE_ONEDNN_OPTS=1
WORKERS=${PYTEST_WORKERS:-2}
REPORTS=.test-reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
status=0
walls=()

phase() {  # phase NAME ENV-ASSIGNMENTS... -- PYTEST-ARGS...
  local name=$1 start=$SECONDS rc=0
  shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" .venv/bin/python -m pytest -n "$WORKERS" -q --junitxml="$REPORTS/$name.xml" "$@" || rc=$?
  echo "== $name: $((SECONDS - start)) s wall, pytest exit $rc"
  walls+=("\"$name\": $((SECONDS - start))")
  if [ "$rc" -ne 0 ]; then status=$rc; fi
}

echo "== keras-medseg lint: ruff check =="
.venv/bin/ruff check . || status=$?
echo "== keras-medseg tests: TensorFlow backend =="
phase tensorflow KERAS_BACKEND=tensorflow -- --durations=15 "$@"
echo "== keras-medseg tests: JAX backend (backend-agnostic tests) =="
phase jax KERAS_BACKEND=jax -- --durations=10 -m backend_agnostic "$@"
echo "== keras-medseg tests: torch backend (backend-agnostic tests) =="
# one torch (OpenMP) thread per pytest worker: with -n 2 on a shared 2-core machine, torch's default of one
# thread per core made the Dice+CE training test take 311 s instead of 6 s (oversubscribed OpenMP spin-waits);
# tests/conftest.py gives every backend cores // workers threads under pytest-xdist
phase torch KERAS_BACKEND=torch OMP_NUM_THREADS=1 -- --durations=10 -m backend_agnostic "$@"
(IFS=,; echo "{${walls[*]}}") > "$REPORTS/wall.json"
.venv/bin/python scripts/suite_durations.py "$REPORTS" || true
echo "== total (setup, lint and tests): $(( (SECONDS - start_all) / 60 )) min $(( (SECONDS - start_all) % 60 )) s;" \
  "exit $status"
exit "$status"
