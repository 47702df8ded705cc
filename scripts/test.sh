#!/usr/bin/env bash
# Set everything up (Debian's chromium for the browser tests, redis-server and postgresql for the distributed
# tests, .mpvenv with mediapipe for the BlazePose worker's test included), then run the whole test suite
# (unit, property, integration, end-to-end, browser, distributed).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k refine`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser --services --blazepose
exec .venv/bin/python -m pytest "$@"
