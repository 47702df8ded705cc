"""The Label Studio ML backend: a Flask app serving /health /setup /predict /webhook /versions.

Thin by design: it converts Label Studio JSON to :mod:`vl4pose` types and back. Importing this
package is cheap; the app (and torch) load in :func:`create_app`.

Production: ``gunicorn -c python:ml_backend.gunicorn_conf 'ml_backend:create_app()'``.
Development: ``python -m ml_backend --port 9090``. Settings: see ``docs/ML_BACKEND.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> "Flask":
    """Build the Flask app; ``test_config`` overrides settings (keys of :class:`MLBackendConfig`)."""
    # deferred on purpose: ``import ml_backend.config`` (the stack, the tests) must not load Flask and torch
    from ml_backend.app import create_app as _create_app

    return _create_app(test_config)
