#!/usr/bin/env bash
# Set everything up and start the whole system on 127.0.0.1: Label Studio (SQLite), the ML backend, the
# coordinator and its worker; link a ready-to-label demo project (or your data) and print the URLs and login.
#   bash scripts/start.sh                                     the demo (LSPET when present, else generated figures)
#   bash scripts/start.sh --data DIR                          your images (a folder)
#   bash scripts/start.sh --data DIR --dataset lspet|lsp|coco|labelstudio [--split S] [--image-dir D]
# Running it again reuses everything (fast restart). Stop with: bash scripts/stop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m stack start "$@"
