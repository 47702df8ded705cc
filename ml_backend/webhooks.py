"""Forward Label Studio's webhook events to the coordinator, in the background.

Label Studio blocks on ``/webhook`` (and gives its project webhooks 1 s), so the route only queues
the event; one daemon thread posts it to ``{coordinator}/hooks/label-studio`` with the shared
secret in ``X-VL4Pose-Secret``. The coordinator also reconciles through the Label Studio API, so an
event lost here (queue full, coordinator down) never loses a label.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

HOOK_PATH = "/hooks/label-studio"
SECRET_HEADER = "X-VL4Pose-Secret"
QUEUE_SIZE = 1000
ATTEMPTS = 3
RETRY = Retry(total=ATTEMPTS - 1, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504),
              allowed_methods=frozenset({"POST"}), raise_on_status=False, respect_retry_after_header=False)
"""urllib3's retries: a refused connection, a timeout or a 5xx is tried again (after 0 s, then 1 s), 4xx never."""


class WebhookForwarder:
    """Queues events and posts them one by one to the coordinator (a few attempts each)."""

    def __init__(self, coordinator_url: str, secret: str, timeout: float = 5.0, actions: tuple[str, ...] = ()) -> None:
        self.url = coordinator_url.rstrip("/") + HOOK_PATH
        self._secret = secret
        self.timeout = timeout
        self.actions = frozenset(actions)
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0

    def wants(self, action: object) -> bool:
        return isinstance(action, str) and ("*" in self.actions or action.upper() in self.actions)

    def submit(self, event: dict) -> bool:
        """Queue an event for delivery; False when its action is not forwarded or the queue is full."""
        if not self.wants(event.get("action")):
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("webhook queue full (%d events): dropping %s; the coordinator's reconcile will catch up",
                        QUEUE_SIZE, event.get("action"))
            return False
        self._ensure_thread()
        return True

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was handled (tests, shutdown). True when the queue drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-forwarder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=RETRY))
        session.mount("https://", HTTPAdapter(max_retries=RETRY))
        while True:
            event = self._queue.get()
            try:
                self._deliver(session, event)
            finally:
                self._queue.task_done()

    def _deliver(self, session: requests.Session, event: dict) -> None:
        """Post one event (the session's adapter retries it, :data:`RETRY`); count it delivered or failed."""
        action = event.get("action")
        try:
            response = session.post(self.url, json=event, headers={SECRET_HEADER: self._secret}, timeout=self.timeout)
        except requests.RequestException as exc:
            reason = type(exc).__name__
        else:
            if response.status_code < 400:
                self.delivered += 1
                return
            if response.status_code < 500:
                log.warning("coordinator refused %s with HTTP %d", action, response.status_code)
                self.failed += 1
                return
            reason = f"HTTP {response.status_code}"
        self.failed += 1
        log.warning("could not forward %s to %s after %d attempts (%s)", action, self.url, ATTEMPTS, reason)
