#!/usr/bin/env bash
# Create ./.venv (if missing) and install keras-medseg with its test, JAX,
# torch, medical-IO, whole-slide (Dask, OpenSlide) and benchmark extras (the benchmarks need itk and nilearn).
# torch is pinned to the CPU build 2.13.0 (the wheel on this kind of machine's disk, found through pip's
# find-links), so the `[torch]` extra does not pull a CUDA build. keras-cv is installed only so a test can
# compare our 2D non-max suppression with its layer; the library does not need it.
#
# The packages are installed by uv (installed first with pip, into the venv) with pip's own configuration
# (index-url, extra-index-url, find-links, constraint, cert, from `pip config list` and PIP_* variables) and
# `--index-strategy unsafe-best-match`, so it resolves the same versions pip does: a fresh venv took 46 s
# instead of pip's 156-188 s (2 AMD EPYC cores, cold uv cache). If uv fails for any reason, pip does the
# same install. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PACKAGES=("torch==2.13.0" -e ".[test,jax,torch,keras-cv,medical,bench,slides]")

uv_install() {
  .venv/bin/python -m pip install --quiet "uv>=0.5" || return 1
  local args=(--python .venv/bin/python --quiet --index-strategy unsafe-best-match) key value seen=" "
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
  done < <(.venv/bin/python -m pip config list 2>/dev/null)
  .venv/bin/python -m uv pip install "${args[@]}" "${PACKAGES[@]}"
}

if ! uv_install; then
  echo "setup: uv could not install the packages; installing them with pip" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[test,jax,torch,keras-cv,medical,bench,slides]"
fi
