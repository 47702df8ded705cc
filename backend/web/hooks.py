"""``POST /hooks/label-studio``: check the shared secret, store the event, answer at once.

Label Studio waits at most 1 s and never retries, so nothing slow happens here: the event is stored
in the inbox and processing is queued (a worker applies it; reconcile catches anything lost).
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from backend.services.events import EventError, store_event
from backend.services.linking import SECRET_HEADER
from backend.web.auth import Unauthorized, same
from backend.errors import CoordinatorError

log = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__)


@bp.post("/hooks/label-studio")
def label_studio_event():
    services = current_app.extensions["vl4pose"]
    if not same(request.headers.get(SECRET_HEADER), services.settings.webhook_secret):
        log.warning("webhook refused: missing or wrong %s header (from %s)", SECRET_HEADER, request.remote_addr)
        raise Unauthorized(
            f"missing or wrong {SECRET_HEADER} header; register the webhook with the coordinator's "
            "secret (python -m backend link does it)"
        )
    body = request.get_json(silent=True)
    if body is None:
        raise CoordinatorError("the body is not JSON; Label Studio sends application/json webhooks")
    try:
        event_id = store_event(services.db, body)
    except EventError as exc:
        raise CoordinatorError(f"not a Label Studio event: {exc}") from None
    try:
        services.tasks.process_events()
    except Exception:  # the event is stored: a worker or the next reconcile will process it
        log.exception("could not queue processing of webhook event %d", event_id)
    return jsonify({"ok": True, "event_id": event_id})
