#!/usr/bin/env bash
# Create or update the environments: ours in .venv/, Label Studio's in .lsvenv/ (kept apart: it pins
# its own Django/numpy stack and only talks HTTP to us). Idempotent and quick when nothing changed.
#   bash scripts/setup.sh            both environments
#   bash scripts/setup.sh --no-ls    only .venv
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LABEL_STUDIO_VERSION=1.23.2

stamp() { sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$(stamp)" ]; then
  echo "[setup] installing the project into .venv (torch==2.13.0 CPU build)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[service,test]"
  stamp > .venv/.setup-stamp
fi

if [ "${1:-}" != "--no-ls" ]; then
  installed=$(.lsvenv/bin/python -c "import importlib.metadata as m; print(m.version('label-studio'))" 2>/dev/null || true)
  if [ "$installed" != "$LABEL_STUDIO_VERSION" ]; then
    echo "[setup] installing label-studio==$LABEL_STUDIO_VERSION into .lsvenv (about a minute)"
    "$PYTHON" -m venv .lsvenv
    .lsvenv/bin/python -m pip install --quiet "label-studio==$LABEL_STUDIO_VERSION"
  fi
fi
echo "[setup] ready: .venv$([ "${1:-}" != "--no-ls" ] && echo " and .lsvenv")"
