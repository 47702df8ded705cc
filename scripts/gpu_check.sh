#!/usr/bin/env bash
# The engine's GPU check: one command, about 7 minutes on one H200-class GPU. Runs the CUDA-marked tests,
# trains the `paper` preset on the packed LSPET pool under a time budget, evaluates it on the packed test
# split (ground-truth and automatic boxes), benchmarks batched ranking, and writes results.json + table.md
# (and each step's log) to OUT.
#   bash scripts/gpu_check.sh OUT              on the GPU machine (its own python3, PYTHONPATH=.)
#   bash scripts/gpu_check.sh --dry-run OUT    here, on the CPU: tiny preset, a few steps (the tests run this)
# The pack travels with the checkout (../shared does not): build it first with
#   .venv/bin/python scripts/gpu_pack.py --out build/gpu-pack/lspet
# and name build/gpu-pack in the device call's carry. VL4POSE_GPU_PACK overrides its place, PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=()
if [ "${1:-}" = "--dry-run" ]; then DRY=(--dry-run); shift; fi
OUT=${1:?usage: bash scripts/gpu_check.sh [--dry-run] OUT_DIR}
PACK=${VL4POSE_GPU_PACK:-build/gpu-pack/lspet}
if [ ! -f "$PACK/joints.mat" ]; then
  echo "no LSPET pack at $PACK; build it with: .venv/bin/python scripts/gpu_pack.py --out $PACK" >&2
  exit 2
fi
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ ${#DRY[@]} -gt 0 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_check.py --pack "$PACK" --out "$OUT" "${DRY[@]}"
