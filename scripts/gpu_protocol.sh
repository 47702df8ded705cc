#!/usr/bin/env bash
# The paper's active-learning experiment as far as 8 minutes on one H200-class GPU allow: `paper` preset,
# random / multipeak_entropy / vl4pose, 3 seeds side by side on the one GPU, 2,000 -> 3,000 -> 4,000 labels,
# each training run under a time budget; writes results.json + table.md + curve.png (+ failure.md and each
# seed's log) to OUT. What had to be cut is in scripts/gpu_protocol.py's docstring.
#   bash scripts/gpu_protocol.sh OUT              on the GPU machine (its own python3, PYTHONPATH=.)
#   bash scripts/gpu_protocol.sh --dry-run OUT    here, on the CPU: tiny preset, a few images (the tests run this)
# Extra options go to scripts/gpu_protocol.py (e.g. --strategies random vl4pose vl4pose_kcentre).
# The pack travels with the checkout (../shared does not): build it first with
#   .venv/bin/python scripts/gpu_pack.py --out build/gpu-pack/lspet
# and name build/gpu-pack in the device call's carry. VL4POSE_GPU_PACK overrides its place, PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=()
if [ "${1:-}" = "--dry-run" ]; then DRY=(--dry-run); shift; fi
OUT=${1:?usage: bash scripts/gpu_protocol.sh [--dry-run] OUT_DIR [options of scripts/gpu_protocol.py]}
shift
PACK=${VL4POSE_GPU_PACK:-build/gpu-pack/lspet}
if [ ! -f "$PACK/joints.mat" ]; then
  echo "no LSPET pack at $PACK; build it with: .venv/bin/python scripts/gpu_pack.py --out $PACK" >&2
  exit 2
fi
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ ${#DRY[@]} -gt 0 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_protocol.py --pack "$PACK" --out "$OUT" "${DRY[@]}" "$@"
