"""HTTP only: the endpoints Label Studio calls. The logic lives in the services (``app.extensions``)."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from flask import Blueprint, current_app, jsonify, request

from common.labelconfig import LabelConfigError
from ml_backend.clickmemory import forget_for_event
from ml_backend.config import MLBackendConfig
from ml_backend.errors import ApiError
from ml_backend.interactive import ContextError
from ml_backend.models import ModelService
from ml_backend.predictions import PredictionService, ProjectNotLinked, RequestError
from ml_backend.projects import parse_project_id
from ml_backend.webhooks import WebhookForwarder
from vl4pose.errors import VL4PoseError

log = logging.getLogger(__name__)

bp = Blueprint("ml_backend", __name__)

EXTENSION = "vl4pose_ml_backend"


@dataclass
class Services:
    config: MLBackendConfig
    models: ModelService
    predictions: PredictionService
    forwarder: WebhookForwarder | None


def services() -> Services:
    return current_app.extensions[EXTENSION]


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object (Content-Type: application/json)")
    return body


def _as_api_error(exc: VL4PoseError) -> ApiError:
    if isinstance(exc, LabelConfigError):
        status = 400 if exc.code == "invalid_label_config" else 422
        return ApiError(status, exc.code, exc.message, **exc.extra)
    if isinstance(exc, ContextError):
        return ApiError(400, "malformed_context", str(exc))
    if isinstance(exc, RequestError):
        return ApiError(400, "invalid_request", str(exc))
    if isinstance(exc, ProjectNotLinked):
        return ApiError(404, "project_not_linked", str(exc))
    return ApiError(422, type(exc).__name__, str(exc))


PUBLIC_PATHS = ("/", "/health")
"""Answered without credentials (Label Studio's connection check); they reveal nothing but "UP"."""


def _authorized() -> bool:
    config = services().config
    if not config.auth_enabled:
        return True
    auth = request.authorization
    return (auth is not None and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), (config.basic_auth_user or "").encode())
            and hmac.compare_digest((auth.password or "").encode(), (config.basic_auth_password or "").encode()))


_unsigned_webhooks = 0


def _log_refusal() -> None:
    """Log a refused request; Label Studio 1.23.2's own event posts to ``/webhook`` (no credentials at all: it does
    not send a backend's Basic auth with them) are explained once, then counted quietly (one per annotation)."""
    global _unsigned_webhooks
    if request.path == "/webhook" and request.authorization is None:
        _unsigned_webhooks += 1
        if _unsigned_webhooks == 1:
            log.warning("refused POST /webhook without credentials: Label Studio posts a connected backend's project "
                        "events without its Basic auth, so they are refused while auth is on (nothing is lost: the "
                        "coordinator has a webhook of its own); further ones are logged at debug level")
        else:
            log.debug("refused POST /webhook without credentials (%d so far)", _unsigned_webhooks)
        return
    log.warning("refused %s %s: missing or wrong HTTP Basic credentials", request.method, request.path)


@bp.before_app_request
def _basic_auth() -> None:
    if request.path in PUBLIC_PATHS and request.method in ("GET", "HEAD"):
        return
    if not _authorized():
        _log_refusal()
        raise ApiError(401, "unauthorized", "this ML backend needs HTTP Basic auth: in Label Studio, connect it with "
                                            "authentication on and the user/password of VL4POSE_ML_BASIC_AUTH_*")


@bp.after_app_request
def _challenge(response):
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="vl4pose-ml-backend"'
    return response


@bp.get("/health")
@bp.get("/")
def health():
    """``{"status": "UP", "model_class": "VL4Pose"}``; with valid credentials also every linked project's model."""
    body: dict = {"status": "UP", "model_class": "VL4Pose"}
    if _authorized():
        s = services()
        s.models.refresh_in_background()
        body["projects"] = s.models.status()
    return jsonify(body)


@bp.post("/setup")
def setup():
    try:
        return jsonify(services().predictions.setup(_json_body()))
    except VL4PoseError as exc:
        raise _as_api_error(exc) from None


@bp.post("/predict")
def predict():
    try:
        return jsonify(services().predictions.predict(_json_body()))
    except VL4PoseError as exc:
        raise _as_api_error(exc) from None


@bp.post("/webhook")
def webhook():
    """Answer at once; forget the interactive clicks the event ends (a submitted annotation); forward the event to
    the coordinator in the background (never train here)."""
    body = _json_body()
    action = body.get("action")
    s = services()
    forgotten = forget_for_event(s.predictions.memory, body) if s.predictions.memory is not None else 0
    forwarded = s.forwarder.submit(body) if s.forwarder is not None else False
    log.info("webhook %s%s%s", action, f" (clicks of {forgotten} task(s) forgotten)" if forgotten else "",
             " (forwarded to the coordinator)" if forwarded else "")
    return jsonify({"status": "ok", "action": action, "forwarded": forwarded})


@bp.post("/train")
def train():
    """Legacy training call (Label Studio without the webhook flag): forwarded as START_TRAINING."""
    body = _json_body()
    project_id = parse_project_id(body.get("project"))
    forwarder = services().forwarder
    event = {"action": "START_TRAINING", "project": {"id": int(project_id)} if project_id else None}
    forwarded = forwarder.submit(event) if forwarder is not None else False
    return jsonify({"status": "ok", "job": None, "forwarded": forwarded})


@bp.get("/versions")
def versions():
    """Published versions; ``current`` is the current version of the project named in the query or body."""
    models = services().models
    body = request.get_json(silent=True)
    raw = request.args.get("project") or (body.get("project") if isinstance(body, dict) else None)
    project_id = parse_project_id(raw)
    current = models.current_version(project_id) if project_id and models.linked(project_id) else None
    return jsonify({"versions": models.registry.versions(), "current": current})
