#!/usr/bin/env bash
# Create ./.venv (if missing) and install keras-medseg with its test, TensorFlow, JAX,
# torch, medical-IO, whole-slide (Dask, OpenSlide), benchmark (the benchmarks need itk and nilearn) and docs (MkDocs,
# mkdocstrings) extras.
# torch is pinned to the CPU build 2.13.0 (the wheel on this kind of machine's disk, found through pip's
# find-links), so the `[torch]` extra does not pull a CUDA build. keras-cv is installed only so a test can
# compare our 2D non-max suppression with its layer; the library does not need it.
#
# The packages are installed by uv (installed first with pip, into the venv) with pip's own configuration
# (index-url, extra-index-url, find-links, constraint, cert, from `pip config list` and PIP_* variables) and
# `--index-strategy unsafe-best-match`, so it resolves the same versions pip does, and `--compile-bytecode`,
# as pip does: where PYTHONDONTWRITEBYTECODE is set (as on CI's machines) nothing else writes the .pyc files,
# and every process of the suite compiled TensorFlow and Keras again (`import keras_medseg` 20 CPU s instead of
# 9; the TensorFlow phase 17.5 -> 26.6 min). A fresh venv: 60-71 s in the suite's runs (uv cache warm; 130 s beside
# other work) instead of pip's 156-188 s. If uv fails for any reason, pip does the same install. Safe to run
# again: it only installs what is missing. The checkout's own modules are byte-compiled too (an editable install
# has no .pyc otherwise). `COMPILE_BYTECODE=0` skips both: scripts/test.sh does, and lets Python write the .pyc of
# only the modules the suite imports, as it imports them (a fresh full venv: 20 CPU s instead of 102; the first
# import of keras_medseg and the test libraries then costs 15 CPU s more, once).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}  # `VENV=DIR bash scripts/setup.sh PACKAGE...`: those packages into DIR instead (scripts/test.sh)
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ "$#" -gt 0 ]; then
  PACKAGES=("$@")
else
  PACKAGES=("torch==2.13.0" -e ".[test,tensorflow,jax,torch,keras-cv,medical,bench,slides,docs]")
fi

uv_install() {
  "$VENV/bin/python" -m pip install --quiet "uv>=0.5" || return 1
  local args=(--python "$VENV/bin/python" --quiet --index-strategy unsafe-best-match) key value seen=" "
  if [ "${COMPILE_BYTECODE:-1}" != 0 ]; then args+=(--compile-bytecode); fi
  # `pip config list` prints lines like  global.find-links='/opt/wheels'  (and :env:.find-links for PIP_*)
  while IFS= read -r line; do
    key=${line%%=*}; key=${key##*.}; value=${line#*=}; value=${value#\'}; value=${value%\'}
    for v in $value; do
      [[ $seen == *" $key=$v "* ]] && continue
      seen+="$key=$v "
      case $key in
        index-url) args+=(--index-url "$v") ;;
        extra-index-url) args+=(--extra-index-url "$v") ;;
        find-links) args+=(--find-links "$v") ;;
        constraint) args+=(--constraint "$v") ;;
        cert) export SSL_CERT_FILE=${SSL_CERT_FILE:-$v} ;;
      esac
    done
  done < <("$VENV/bin/python" -m pip config list 2>/dev/null)
  "$VENV/bin/python" -m uv pip install "${args[@]}" "${PACKAGES[@]}"
}

if ! uv_install; then
  echo "setup: uv could not install the packages; installing them with pip" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  for package in "${PACKAGES[@]}"; do  # torch first, on its own, so no extra pulls another build
    if [[ $package == torch==* ]]; then "$VENV/bin/python" -m pip install --quiet "$package"; fi
  done
  "$VENV/bin/python" -m pip install --quiet "${PACKAGES[@]}"
fi
if [ "$#" -eq 0 ] && [ "${COMPILE_BYTECODE:-1}" != 0 ]; then
  "$VENV/bin/python" -m compileall -q -j 0 keras_medseg tests >/dev/null || true
fi
