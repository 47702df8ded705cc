#!/usr/bin/env bash
# Set everything up (Debian's chromium included, for the browser tests), then run the whole test suite
# (unit, property, integration, end-to-end, browser).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k refine`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
exec .venv/bin/python -m pytest "$@"
