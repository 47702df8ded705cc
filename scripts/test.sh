#!/usr/bin/env bash
# Set everything up, then run the whole test suite (unit, property, integration, end-to-end).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k refine`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
