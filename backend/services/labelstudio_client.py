"""The connection underneath the Label Studio adapter (:class:`backend.services.labelstudio.LabelStudio`): one server,
one API token, the SDK client and a raw httpx client, error translation and image downloads.

Errors become :class:`LabelStudioUnavailable` (connection problems, timeouts, 5xx: worth retrying) or
:class:`LabelStudioError` (4xx: fix the request). Messages never contain the token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from backend.errors import CoordinatorError, TransientError
from vl4pose.fetch import AddressPolicy, Credential, DownloadLimits, FetchError, download, origin

T = TypeVar("T")


class LabelStudioUnavailable(TransientError):
    """Label Studio could not be reached, timed out or failed (5xx); the job retries later."""


class LabelStudioError(CoordinatorError):
    """Label Studio refused a request (4xx); ``ls_status`` is Label Studio's HTTP status when it answered with one
    (``status``, inherited, is what the coordinator's own API answers)."""

    def __init__(self, message: str, ls_status: int | None = None) -> None:
        super().__init__(message)
        self.ls_status = ls_status


class LabelStudioClient:
    """A connection to one Label Studio server with one API token (legacy token or personal JWT): SDK calls through
    :meth:`call`, raw requests through :meth:`request`, downloads through :meth:`fetch`."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        if not token:
            raise LabelStudioError(
                "no Label Studio API token: set VL4POSE_LABEL_STUDIO_TOKEN "
                "(Label Studio > Account & Settings > Access Token)"
            )
        self.url = url.rstrip("/")
        self.timeout = timeout
        from label_studio_sdk import LabelStudio as Client  # deferred on purpose: ~560 modules on import

        self.sdk = Client(base_url=self.url, api_key=token, timeout=timeout, max_retries=0)
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.sdk._client_wrapper.get_headers()["Authorization"]}

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an SDK call, translating its errors."""
        from label_studio_sdk.core.api_error import ApiError  # loaded by __init__ by then (deferred there)

        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise self._status_error(what, exc.status_code or 0, exc.body) from None
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} is unreachable ({type(exc).__name__}) "
                f"while trying to {what}; is it running?"
            ) from None

    def request(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw authenticated request to ``path`` (relative to the server URL)."""
        try:
            response = self._http.request(method, self.url + path, headers=self._headers(), **kwargs)
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} is unreachable ({type(exc).__name__}) "
                f"while trying to {what}; is it running?"
            ) from None
        if response.status_code >= 400:
            raise self._status_error(what, response.status_code, response.text)
        return response

    def request_json(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request` and its JSON answer; an answer that is not JSON is a :class:`LabelStudioError`."""
        return self.decode_json(what, self.request(what, method, path, **kwargs))

    def decode_json(self, what: str, response: httpx.Response) -> Any:
        """The JSON answer of ``response`` (:meth:`request`'s, to ``what``), for a caller that also needs the response
        (e.g. to allow an empty body); an answer that is not JSON (a proxy's login page...) is a
        :class:`LabelStudioError` naming ``what``."""
        try:
            return response.json()
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            raise LabelStudioError(f"Label Studio answered the request to {what} with something that is not JSON "
                                   f"({response.status_code}): {response.text[:200]!r}; is {self.url} Label Studio "
                                   "itself (VL4POSE_LABEL_STUDIO_URL), not a proxy or login page in front of it?"
                                   ) from None

    def _status_error(self, what: str, status: int, body: Any) -> CoordinatorError:
        text = str(body)[:300]
        if status >= 500 or status in (0, 429):
            return LabelStudioUnavailable(f"Label Studio failed ({status}) to {what}: {text}")
        return LabelStudioError(f"Label Studio refused ({status}) to {what}: {text}", status)

    def close(self) -> None:
        self._http.close()

    def fetch(self, url: str, max_bytes: int) -> bytes:
        """Download a task's file (``/data/...`` relative URLs are on this server) through
        :func:`vl4pose.fetch.download`: the token goes to this server's origin only (never after a redirect
        away from it), no cookies, a wall-clock deadline of the adapter's timeout."""
        target = url if url.startswith(("http://", "https://")) else self.url + "/" + url.lstrip("/")
        if not target.startswith(self.url + "/"):
            raise LabelStudioError(
                f"image URL {url[:200]!r} is not on Label Studio ({self.url}); "
                "the coordinator only downloads images from Label Studio"
            )
        limits = DownloadLimits(max_bytes, min(10.0, self.timeout), self.timeout)
        credential = Credential(origin(self.url), self._headers()["Authorization"])
        try:
            return download(target, limits, credential, AddressPolicy().with_trusted(self.url))
        except FetchError as exc:
            if exc.transient:
                raise LabelStudioUnavailable(f"download image {url[:200]}: {exc}") from None
            if exc.kind == "too_large":
                raise LabelStudioError(f"image {url[:200]} is larger than {max_bytes} bytes (VL4POSE_IMAGE_MAX_BYTES)")
            status = f" ({exc.status})" if exc.status else ""
            raise LabelStudioError(f"Label Studio refused{status} to download image {url[:200]}: {exc}") from None
