"""Errors as JSON ``{"error": code, "message": ...}`` with the right status (HTML pages get a short page)."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template_string, request
from werkzeug.exceptions import HTTPException

from backend.errors import CoordinatorError
from vl4pose.errors import VL4PoseError

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/hooks/")) or request.accept_mimetypes.best == "application/json"


def _answer(status: int, code: str, message: str):
    if _wants_json():
        return jsonify({"error": code, "message": message}), status
    page = (
        '{% extends "base.html" %}{% block content %}<h1>{{ status }}</h1>'
        '<p class="flash error">{{ message }}</p>{% endblock %}'
    )
    return render_template_string(page, status=status, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(CoordinatorError)
    def coordinator_error(exc: CoordinatorError):
        return _answer(exc.status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        messages = {
            413: f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes",
            404: "no such page or endpoint; see docs/COORDINATOR.md for the API",
            405: f"{request.method} is not allowed here",
        }
        return _answer(exc.code or 500, code, messages.get(exc.code, exc.description or code))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if isinstance(exc, VL4PoseError):
            return _answer(400, "invalid_input", str(exc))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _answer(500, "internal_error", "the coordinator failed unexpectedly; see its log for details")
