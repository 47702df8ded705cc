"""The coordinator's Flask app: settings -> the process's parts (:func:`backend.runtime.build_services`) -> the
blueprints. Production: ``gunicorn "backend:create_app()"``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask

from backend.config import Settings
from backend.runtime import build_services
from backend.web import api, dashboard, errors, export, hooks

log = logging.getLogger(__name__)


def create_app(test_config: Mapping[str, Any] | None = None, ls_factory: Callable[[], Any] | None = None) -> Flask:
    """The coordinator's Flask app.

    Args:
        test_config: setting overrides by field name (e.g. ``{"database_url": ..., "queue": "immediate"}``);
            upper-case keys go to Flask's config. Everything else comes from ``VL4POSE_*`` variables.
        ls_factory: makes the Label Studio adapter (tests pass a fake).
    """
    overrides = {k: v for k, v in (test_config or {}).items() if not k.isupper()}
    settings = Settings.from_env(overrides=overrides)
    app = Flask("backend")  # the package's templates/ and static/
    app.config.update(
        SECRET_KEY=settings.session_secret,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JSON_SORT_KEYS=False,
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if k.isupper()})
    services = build_services(settings, ls_factory)
    app.extensions["vl4pose"] = services
    app.register_blueprint(hooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(export.bp)
    errors.register(app)
    log.info("coordinator app ready: %s", settings.redacted())
    return app
