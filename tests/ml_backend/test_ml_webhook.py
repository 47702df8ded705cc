"""/webhook answers at once and forwards events to the coordinator in the background (a real HTTP server here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from ml_helpers import capture
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ml_backend.routes import EXTENSION

SECRET = "coordinator-shared-secret"


@dataclass
class Coordinator:
    """Records what reaches ``/hooks/label-studio``; ``gate`` holds each answer until the test opens it."""

    url: str = ""
    received: list[tuple[dict, str | None, bool]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    status: int = 200

    def app(self, environ, start_response):
        request = Request(environ)
        if request.path != "/hooks/label-studio":
            return Response("no", 404)(environ, start_response)
        opened = self.gate.wait(20)
        self.received.append((json.loads(request.get_data()), request.headers.get("X-VL4Pose-Secret"), opened))
        return Response(json.dumps({"ok": True}), self.status, mimetype="application/json")(environ, start_response)


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    stub = Coordinator()
    http = make_server("127.0.0.1", 0, stub.app, threaded=True)
    stub.url = f"http://127.0.0.1:{http.port}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.gate.set()
    http.shutdown()
    thread.join(5)


@pytest.fixture
def forwarding(make_app, coordinator):
    return make_app(coordinator_url=coordinator.url, webhook_secret=SECRET)


EVENTS = ["05_webhook_START_TRAINING_from_train_button", "07_webhook_START_TRAINING_on_annotation_submit",
          "08_webhook_ANNOTATION_CREATED", "09_webhook_ANNOTATION_UPDATED", "13_webhook_TASKS_CREATED",
          "11c_coordinator_webhook_ANNOTATIONS_DELETED"]


def test_events_are_answered_before_they_reach_the_coordinator(forwarding, coordinator):
    client = forwarding.test_client()
    payloads = [capture(name)["json"] for name in EVENTS]
    for payload in payloads:
        response = client.post("/webhook", json=payload)
        assert response.status_code == 200
        assert response.json == {"status": "ok", "action": payload["action"], "forwarded": True}
    assert coordinator.received == []  # the coordinator has not answered yet, /webhook already did
    coordinator.gate.set()
    assert forwarding.extensions[EXTENSION].forwarder.join(30)
    assert [r[0] for r in coordinator.received] == payloads  # verbatim, in order
    assert all(secret == SECRET and opened for _, secret, opened in coordinator.received)


def test_other_actions_are_not_forwarded(forwarding, coordinator):
    coordinator.gate.set()
    client = forwarding.test_client()
    response = client.post("/webhook", json=capture("06_webhook_PROJECT_UPDATED")["json"])
    assert response.json["forwarded"] is False
    assert client.post("/webhook", json={"no_action": True}).json["forwarded"] is False
    forwarding.extensions[EXTENSION].forwarder.join(10)
    assert coordinator.received == []


def test_legacy_train_is_forwarded_as_start_training(forwarding, coordinator):
    coordinator.gate.set()
    response = forwarding.test_client().post("/train", json=capture("12_legacy_train")["json"])
    assert response.json == {"status": "ok", "job": None, "forwarded": True}
    assert forwarding.extensions[EXTENSION].forwarder.join(30)
    assert coordinator.received[0][0] == {"action": "START_TRAINING", "project": {"id": 2}}


def test_unreachable_coordinator_never_fails_the_webhook(make_app, caplog):
    from stack.process import free_port

    app = make_app(coordinator_url=f"http://127.0.0.1:{free_port()}", webhook_secret=SECRET, webhook_timeout=0.5)
    response = app.test_client().post("/webhook", json=capture("08_webhook_ANNOTATION_CREATED")["json"])
    assert response.status_code == 200 and response.json["forwarded"] is True
    assert app.extensions[EXTENSION].forwarder.join(30)
    assert "could not forward ANNOTATION_CREATED" in caplog.text and SECRET not in caplog.text


def test_webhook_body_must_be_json(client):
    response = client.post("/webhook", data="nope", content_type="text/plain")
    assert response.status_code == 400 and response.json["error"] == "invalid_json"


@pytest.mark.parametrize(("answers", "posts", "delivered"), [
    ([503, 502, 200], 3, True),  # a coordinator restarting: the third attempt gets through
    ([500, 500, 500, 200], 3, False),  # three attempts, then the event is counted failed (reconcile catches up)
    ([400, 200], 1, False),  # a refusal is never retried
])
def test_the_forwarder_retries_server_errors_only(answers, posts, delivered, caplog):
    """The session's urllib3 retries (``ml_backend.webhooks.RETRY``): 5xx tried again, 4xx not, 3 attempts at most."""
    from ml_backend.webhooks import WebhookForwarder

    seen: list[int] = []

    def app(environ, start_response):
        status = answers[min(len(seen), len(answers) - 1)]
        seen.append(status)
        return Response("{}", status, mimetype="application/json")(environ, start_response)

    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        forwarder = WebhookForwarder(f"http://127.0.0.1:{http.port}", SECRET, timeout=5, actions=("*",))
        assert forwarder.submit({"action": "ANNOTATION_CREATED"})
        assert forwarder.join(30)
    finally:
        http.shutdown()
        thread.join(5)
    assert len(seen) == posts
    assert (forwarder.delivered, forwarder.failed) == ((1, 0) if delivered else (0, 1))
    assert SECRET not in caplog.text
