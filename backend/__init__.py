"""The VL4Pose coordinator: labelling rounds in a database, train -> evaluate -> rank jobs on a queue,
Label Studio webhooks and reconcile, and a dashboard. ``create_app`` builds the web process; the worker
(``python -m backend worker``) runs the jobs. See docs/COORDINATOR.md and docs/ARCHITECTURE.md.

Dependency order (each layer imports only those before it): ``config``, ``errors``, ``models`` (``base`` ->
``projects``, ``records``), ``db`` -> ``services.labelstudio_client`` -> ``services.labelstudio``,
``services.images`` -> ``services.base`` (the :class:`~backend.services.base.Services` record and the
``JobQueue`` protocol) -> ``jobs.context`` (what a job handler sees) -> the other ``services`` (each function
receives the parts it uses) -> one handler per job kind in ``jobs`` -> ``jobs.runner``, ``jobs.queue`` ->
``runtime`` (the composition root) -> ``web`` -> ``worker``, ``huey_app``, ``cli``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None, ls_factory: Callable[[], Any] | None = None) -> Flask:
    """The coordinator's Flask app (``gunicorn "backend:create_app()"``); see :func:`backend.web.app.create_app`."""
    # deferred on purpose: importing any ``backend.*`` module runs this file, and most (scripts, the worker, Alembic)
    # need neither Flask nor the whole coordinator
    from backend.web.app import create_app as build

    return build(test_config, ls_factory)
