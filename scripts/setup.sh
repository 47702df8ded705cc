#!/usr/bin/env bash
# Create or update the environments: ours in .venv/, Label Studio's in .lsvenv/ (kept apart: it pins
# its own Django/numpy stack and only talks HTTP to us). Idempotent and quick when nothing changed.
#   bash scripts/setup.sh              both environments
#   bash scripts/setup.sh --no-ls      only .venv
#   bash scripts/setup.sh --browser    also Debian's chromium for the browser tests (apt-get, as root);
#                                      Playwright drives it and never downloads a browser of its own
#   bash scripts/setup.sh --services   also Debian's redis-server and postgresql for the distributed tests
#                                      (apt-get, as root; their services are not started: the tests start
#                                      their own throw-away servers on free ports)
#   bash scripts/setup.sh --blazepose  also .mpvenv/ with mediapipe 0.10.14 (its wheel carries BlazePose's
#                                      weights) for the opt-in pretrained second opinion (vl4pose/blazepose.py);
#                                      its own virtualenv: it needs protobuf < 5, the ONNX packages >= 6
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LABEL_STUDIO_VERSION=1.23.2
WITH_LS=1
WITH_BROWSER=0
WITH_SERVICES=0
WITH_BLAZEPOSE=0
MEDIAPIPE_VERSION=0.10.14
for arg in "$@"; do
  case "$arg" in
    --no-ls) WITH_LS=0 ;;
    --browser) WITH_BROWSER=1 ;;
    --services) WITH_SERVICES=1 ;;
    --blazepose) WITH_BLAZEPOSE=1 ;;
    *) echo "[setup] unknown option $arg (use --no-ls, --browser, --services, --blazepose)" >&2; exit 2 ;;
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
  .venv/bin/python -m pip install --quiet -e ".[service,distributed,test]"
  stamp > .venv/.setup-stamp
fi

# separate_venv DIR PACKAGE VERSION: DIR becomes a virtualenv of its own holding PACKAGE==VERSION
separate_venv() {
  local installed
  installed=$("$1/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null || true)
  if [ "$installed" != "$3" ]; then
    echo "[setup] installing $2==$3 into $1 (about a minute)"
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install --quiet "$2==$3"
  fi
}

if [ "$WITH_LS" = 1 ]; then
  separate_venv .lsvenv label-studio "$LABEL_STUDIO_VERSION"
fi

if [ "$WITH_BLAZEPOSE" = 1 ]; then
  separate_venv .mpvenv mediapipe "$MEDIAPIPE_VERSION"
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
if [ "$WITH_SERVICES" = 1 ]; then
  have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; }
  if ! command -v redis-server >/dev/null || ! have_pg; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "[setup] installing Debian's redis-server and postgresql for the distributed tests (apt-get)"
      export DEBIAN_FRONTEND=noninteractive
      # keep their packages from starting system-wide servers: the tests start their own on free ports
      policy=0
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
      fi
      if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server postgresql; } \
          > .venv/apt-services.log 2>&1; then
        echo "[setup] WARNING: apt-get could not install redis-server/postgresql (see .venv/apt-services.log);" \
             "the distributed tests skip until they exist" >&2
      fi
      if [ "$policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    else
      echo "[setup] WARNING: redis-server or PostgreSQL is missing and apt-get is not available as root here;" \
           "install Debian's redis-server and postgresql; the distributed tests skip without them" >&2
    fi
  fi
fi
echo "[setup] ready: .venv$([ "$WITH_LS" = 1 ] && echo " and .lsvenv")$([ "$WITH_BROWSER" = 1 ] && [ -x "${VL4POSE_CHROMIUM:-/usr/bin/chromium}" ] && echo " and chromium")$([ "$WITH_SERVICES" = 1 ] && command -v redis-server >/dev/null && echo " and redis-server + postgresql")"
