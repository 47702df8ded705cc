"""HTTP errors as JSON ``{"error": <code>, "message": <what went wrong and how to fix it>}``, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer with a 4xx status; ``extra`` fields are added to the JSON body."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


_HTTP_CODES = {
    400: ("bad_request", "the request is malformed; send a JSON body as Label Studio does"),
    401: ("unauthorized", "send HTTP Basic credentials (the ML backend's user and password)"),
    404: ("not_found", "this endpoint does not exist; the ML backend serves /health /setup /predict /webhook /versions"),
    405: ("method_not_allowed", "this endpoint does not accept that HTTP method"),
    413: ("request_too_large", "the request body is over VL4POSE_MAX_REQUEST_BYTES; select fewer tasks per request "
                               "or raise the limit"),
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        log.warning("%s %s: %s", exc.status, exc.code, exc.message)
        return jsonify(exc.body()), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code, message = _HTTP_CODES.get(exc.code or 500, ("http_error", exc.description or "request failed"))
        response = jsonify({"error": code, "message": message})
        response.status_code = exc.code or 500
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error while serving a request")
        return jsonify({"error": "internal_error",
                        "message": "the ML backend failed unexpectedly; its log has the details"}), 500
