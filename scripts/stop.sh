#!/usr/bin/env bash
# Stop everything scripts/start.sh started (worker, coordinator, ML backend, Label Studio). State stays in storage/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "nothing to stop: .venv/ does not exist"
  exit 0
fi
exec .venv/bin/python -m stack stop "$@"
