#!/usr/bin/env bash
# One command for a newcomer: create .venv, install dsomarket with its test tools, run the demo.
#   bash scripts/setup.sh            set up, then run `dsomarket demo` on embedded defaults
#   bash scripts/setup.sh --no-demo  set up only (what CI does)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The curve tracer's compiled kernels (engine/tracerjit.py, numba), compiled once into numba's on-disk cache
# here rather than by the first curve, test or runner process.
.venv/bin/python -c "import dsomarket.engine.tracerjit"
if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/dsomarket demo
fi
