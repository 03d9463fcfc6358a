#!/usr/bin/env bash
# The README's test command (and CI's): set up ./.venv, run the whole suite on
# the TensorFlow backend, then the backend-agnostic ops/layer/loss/zoo/explain
# tests (marker `backend_agnostic`) again on JAX and on torch (CPU). The JAX and torch phases test the
# package as users install it: the wheel is built, installed with that one backend (`[jax,test]`,
# `[torch,test]`: no TensorFlow anywhere) into its own venv under .test-reports/, and the tests run from a
# copy of tests/ outside the checkout, so `keras_medseg` is the installed wheel's. `ruff check` runs first, so a lint
# error fails CI. Every phase runs even if an earlier one failed; any failure, or a phase that collects no
# test at all (pytest exit 5), makes this script exit non-zero. At the end it prints each phase's wall time,
# the slowest files and the slowest tests (scripts/suite_durations.py over the junit reports in
# .test-reports/). Extra arguments go to every pytest run (e.g. `-x`, `-k unet`). The fast selection while
# developing (not CI): `.venv/bin/python -m pytest -n 2 -m "not slow"`. The JAX phase is also the floors phase: its
# venv gets Keras, NumPy and JAX at the floors of pyproject.toml (scripts/floors.txt), and this script prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
start_all=$SECONDS
# Python writes the .pyc of what the suite imports as it imports it, instead of setup.sh compiling every module
# of the three venvs first (5.9 GB: 102 CPU s against 20 for a fresh main venv); see scripts/setup.sh
unset PYTHONDONTWRITEBYTECODE
export COMPILE_BYTECODE=0
bash scripts/setup.sh
echo "== setup: $((SECONDS - start_all)) s"
export TF_CPP_MIN_LOG_LEVEL=2
export KERAS_MEDSEG_FAST=1
# TensorFlow's oneDNN kernels (on by default only on CPUs with AVX-512 VNNI/BF16): without them a strided
# Conv3D's gradient takes seconds on AMD EPYC (docs/install.md, "Speed on the CPU").
export TF_ENABLE_ONEDNN_OPTS=1
WORKERS=${PYTEST_WORKERS:-2}
REPORTS=.test-reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
status=0
walls=()

phase() {  # phase NAME PYTHON DIR ENV-ASSIGNMENTS... -- PYTEST-ARGS...
  local name=$1 python=$2 dir=$3 start=$SECONDS rc=0
  shift 3
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  # pytest-xdist's default `--dist load`, not `worksteal`: worksteal hands each worker one half of the collection,
  # so in the JAX phase a zoo model's save/load test ran before its build test had filled the shared compilation
  # cache (test_zoo.py on JAX 170 -> 237 CPU s), and the TensorFlow phase's idle time grew (0.7 -> 1.2 min)
  (cd "$dir" && env "${envs[@]}" "$python" -m pytest -n "$WORKERS" -q --junitxml="$ROOT/$REPORTS/$name.xml" "$@") \
    || rc=$?
  echo "== $name: $((SECONDS - start)) s wall, pytest exit $rc"
  walls+=("\"$name\": $((SECONDS - start))")
  if [ "$rc" -ne 0 ]; then status=$rc; fi
}

echo "== keras-medseg lint: ruff check =="
.venv/bin/ruff check . || status=$?
echo "== keras-medseg docs: mkdocs build --strict (a broken link or reference, a docstring griffe cannot parse) =="
docs_start=$SECONDS
# not --quiet: it hides the warnings from --strict's count (a broken link then passes)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$REPORTS/site" || status=$?
echo "== docs: $((SECONDS - docs_start)) s"
walls+=("\"docs\": $((SECONDS - docs_start))")
echo "== keras-medseg tests: TensorFlow backend =="
# three pytest workers on the 2 cores in this phase: its tests wait a tenth of their time (on the processes they
# start: distributed training, Dask, notebooks' kernels), 2.9 of 23.1 test-minutes in the run at a60ec0c, which two
# workers leave idle; the JAX and torch phases keep two (their tests compute, and more JAX workers would run a
# zoo model's save/load test before its build test fills the shared compilation cache)
WORKERS=${PYTEST_WORKERS:-3} phase tensorflow "$ROOT/.venv/bin/python" "$ROOT" KERAS_BACKEND=tensorflow -- \
  --durations=15 "$@"

echo "== keras-medseg wheel: build, install with one backend each (no TensorFlow) =="
wheel_start=$SECONDS
WHEEL_TESTS="$ROOT/$REPORTS/wheel-tests"
mkdir -p "$WHEEL_TESTS" && cp -r tests pyproject.toml "$WHEEL_TESTS/"
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation . -w "$REPORTS/dist"
WHEEL=$(ls "$ROOT/$REPORTS"/dist/keras_medseg-*.whl)
# the JAX venv is also the floors phase: Keras, NumPy and JAX at the floors of pyproject.toml (scripts/floors.txt),
# so the lowest versions the package allows are the ones this phase passes, at no extra CI time
VENV="$REPORTS/venv-jax" bash scripts/setup.sh "$WHEEL[jax,test]" -c scripts/floors.txt &
jax_venv=$!
VENV="$REPORTS/venv-torch" bash scripts/setup.sh "torch==2.13.0" "$WHEEL[torch,test]"
wait "$jax_venv"
"$REPORTS/venv-jax/bin/python" - scripts/floors.txt <<'EOF' || status=1
import importlib.metadata as m, sys
names = [line.split("==")[0] for line in open(sys.argv[1]) if "==" in line and not line.startswith("#")]
print("== floors phase (JAX venv):", ", ".join(f"{n} {m.version(n)}" for n in names))
EOF
for b in jax torch; do
  "$REPORTS/venv-$b/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)" \
    || { echo "venv-$b has TensorFlow installed: the wheel's [$b] extra pulled it in"; status=1; }
done
echo "== wheel and venvs: $((SECONDS - wheel_start)) s ($(du -sh "$REPORTS/venv-jax" | cut -f1) JAX venv," \
  "$(du -sh "$REPORTS/venv-torch" | cut -f1) torch venv, test extras included)"
# benchmarks/ and tutorials/ are not in the wheel: their tests (none backend-agnostic) are left out here
WHEEL_ARGS=(--ignore=tests/benchmarks --ignore=tests/tutorials -m backend_agnostic)
echo "== keras-medseg tests: JAX backend (backend-agnostic tests, installed wheel) =="
phase jax "$ROOT/$REPORTS/venv-jax/bin/python" "$WHEEL_TESTS" KERAS_BACKEND=jax -- --durations=10 "${WHEEL_ARGS[@]}" "$@"
echo "== keras-medseg tests: torch backend (backend-agnostic tests, installed wheel) =="
# one torch (OpenMP) thread per pytest worker: with -n 2 on a shared 2-core machine, torch's default of one
# thread per core made the Dice+CE training test take 311 s instead of 6 s (oversubscribed OpenMP spin-waits);
# tests/conftest.py gives every backend cores // workers threads under pytest-xdist
phase torch "$ROOT/$REPORTS/venv-torch/bin/python" "$WHEEL_TESTS" KERAS_BACKEND=torch OMP_NUM_THREADS=1 -- \
  --durations=10 "${WHEEL_ARGS[@]}" "$@"
# the one backend-agnostic test that needs TensorFlow next to another backend (a GAN fed by a tf.data pipeline)
# is skipped in the TensorFlow-free venvs above: it runs here, on JAX and torch, from the main venv (without the
# extra arguments: a -k filter would leave these phases empty). The two run side by side, one core each.
for b in jax torch; do
  (status=0
   WORKERS=0 phase "tfdata-$b" "$ROOT/.venv/bin/python" "$ROOT" KERAS_BACKEND=$b OMP_NUM_THREADS=1 \
     TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 -- "tests/zoo/test_gan.py::test_fit_from_tf_data_with_validation"
   echo "$status" > "$REPORTS/tfdata-$b.rc"; echo "${walls[-1]}" > "$REPORTS/tfdata-$b.wall") \
    > "$REPORTS/tfdata-$b.log" 2>&1 &
done
wait
for b in jax torch; do
  cat "$REPORTS/tfdata-$b.log"
  rc=$(cat "$REPORTS/tfdata-$b.rc" 2>/dev/null || echo 1)
  if [ "$rc" -ne 0 ]; then status=$rc; fi
  walls+=("$(cat "$REPORTS/tfdata-$b.wall" 2>/dev/null || true)")
done
(IFS=,; echo "{${walls[*]}}") > "$REPORTS/wall.json"
.venv/bin/python scripts/suite_durations.py "$REPORTS" || true
echo "== total (setup, lint and tests): $(( (SECONDS - start_all) / 60 )) min $(( (SECONDS - start_all) % 60 )) s;" \
  "exit $status"
exit "$status"
