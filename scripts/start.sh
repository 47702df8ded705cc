#!/usr/bin/env bash
# Set everything up and start the whole system on 127.0.0.1: Label Studio (SQLite), the ML backend, the
# coordinator and its worker; link a ready-to-label demo project (or your data) and print the URLs and login.
#   bash scripts/start.sh                                     the demo (LSPET when present, else generated figures)
#   bash scripts/start.sh --data DIR                          your images (a folder)
#   bash scripts/start.sh --data DIR --dataset lspet|lsp|coco|labelstudio [--split S] [--image-dir D]
#   VL4POSE_BLAZEPOSE=true bash scripts/start.sh ...           with the opt-in BlazePose second opinion (sets up .mpvenv)
# Running it again reuses everything (fast restart). Stop with: bash scripts/stop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
case "${VL4POSE_BLAZEPOSE:-}" in
  1|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn]) bash scripts/setup.sh --blazepose ;;
  *) bash scripts/setup.sh ;;
esac
exec .venv/bin/python -m stack start "$@"
