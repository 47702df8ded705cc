#!/usr/bin/env bash
# Create or update the environments: ours in .venv/, Label Studio's in .lsvenv/ (kept apart: it pins
# its own Django/numpy stack and only talks HTTP to us). Idempotent and quick when nothing changed.
#   bash scripts/setup.sh              both environments
#   bash scripts/setup.sh --no-ls      only .venv
#   bash scripts/setup.sh --browser    also Debian's chromium for the browser tests (apt-get, as root);
#                                      Playwright drives it and never downloads a browser of its own
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LABEL_STUDIO_VERSION=1.23.2
WITH_LS=1
WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --no-ls) WITH_LS=0 ;;
    --browser) WITH_BROWSER=1 ;;
    *) echo "[setup] unknown option $arg (use --no-ls, --browser)" >&2; exit 2 ;;
  esac
done

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

if [ "$WITH_LS" = 1 ]; then
  installed=$(.lsvenv/bin/python -c "import importlib.metadata as m; print(m.version('label-studio'))" 2>/dev/null || true)
  if [ "$installed" != "$LABEL_STUDIO_VERSION" ]; then
    echo "[setup] installing label-studio==$LABEL_STUDIO_VERSION into .lsvenv (about a minute)"
    "$PYTHON" -m venv .lsvenv
    .lsvenv/bin/python -m pip install --quiet "label-studio==$LABEL_STUDIO_VERSION"
  fi
fi

if [ "$WITH_BROWSER" = 1 ]; then
  CHROMIUM=${VL4POSE_CHROMIUM:-/usr/bin/chromium}
  if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "[setup] installing Debian's chromium for the browser tests (apt-get, a few minutes)"
      export DEBIAN_FRONTEND=noninteractive
      if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } \
          > .venv/apt-chromium.log 2>&1; then
        echo "[setup] WARNING: apt-get could not install chromium (see .venv/apt-chromium.log);" \
             "the browser tests will fail until $CHROMIUM exists" >&2
      fi
    else
      echo "[setup] WARNING: $CHROMIUM is missing and apt-get is not available as root here; install" \
           "Debian's chromium (or set VL4POSE_CHROMIUM); the browser tests fail without it" >&2
    fi
  fi
fi
echo "[setup] ready: .venv$([ "$WITH_LS" = 1 ] && echo " and .lsvenv")$([ "$WITH_BROWSER" = 1 ] && [ -x "${VL4POSE_CHROMIUM:-/usr/bin/chromium}" ] && echo " and chromium")"
