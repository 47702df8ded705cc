"""For ``huey_consumer backend.huey_app.huey``: builds the services from ``VL4POSE_*`` at import (an entry point)."""

from __future__ import annotations

from backend.config import Settings
from backend.runtime import build_services
from backend.worker import set_torch_threads

_settings = Settings.from_env()
set_torch_threads(_settings.torch_threads)
huey = build_services(_settings).huey
