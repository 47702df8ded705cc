"""The transport of :mod:`vl4pose.fetch`: one bounded download, redirects followed by hand, each hop checked.

Built on ``urllib3``, the transport under ``requests`` (which the core ``vl4pose`` package may not import:
``tests/architecture``), because the address check needs its connection classes anyway. What may be reached
and sent is :mod:`vl4pose.fetch.policy`; the guarantees are listed in :mod:`vl4pose.fetch`.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse

import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from vl4pose.fetch.policy import (DEFAULT_PORTS, AddressPolicy, BlockedAddress, Credential, DownloadLimits, FetchError,
                                  Origin, origin, short)

CHUNK = 64 * 1024


class _Deadline:
    """Shuts every watched socket down when the wall-clock deadline passes (a blocked read then returns)."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Guard:
    """Per download: checks each new connection's peer address and hands its socket to the deadline."""

    def __init__(self, policy: AddressPolicy, deadline: _Deadline) -> None:
        self.policy = policy
        self.deadline = deadline

    def admit(self, scheme: str, host: str, port: int | None, sock: socket.socket) -> None:
        peer = sock.getpeername()[0]
        where = (scheme, host.strip("[]").lower(), port or DEFAULT_PORTS[scheme])
        self.policy.check(where, peer)
        self.deadline.watch(sock)


class _GuardedMixin:
    guard: _Guard
    scheme_name = "http"

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            self.guard.admit(self.scheme_name, self.host, self.port, sock)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
        return sock


def _pool(guard: _Guard, where: Origin, wait: float) -> urllib3.connectionpool.HTTPConnectionPool:
    """A one-connection pool for one hop whose connections are checked by ``guard``."""
    scheme, host, port = where
    base_conn = urllib3.connection.HTTPSConnection if scheme == "https" else urllib3.connection.HTTPConnection
    base_pool = (urllib3.connectionpool.HTTPSConnectionPool if scheme == "https"
                 else urllib3.connectionpool.HTTPConnectionPool)
    conn = type("GuardedConnection", (_GuardedMixin, base_conn), {"guard": guard, "scheme_name": scheme})
    pool = type("GuardedPool", (base_pool,), {"ConnectionCls": conn})
    return pool(host, port, timeout=urllib3.Timeout(connect=wait, read=wait), maxsize=1, retries=False)


def _blocked_reason(exc: BaseException) -> str | None:
    """The message of a :class:`BlockedAddress` somewhere inside a requests/urllib3 exception chain."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, BlockedAddress):
            return str(item)
        stack.extend(item.args)
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__])
    return None


def download(url: str, limits: DownloadLimits | None = None, credential: Credential | None = None,
             policy: AddressPolicy | None = None) -> bytes:
    """The body of ``url`` (see the module docstring for what is guaranteed).

    Args:
        url: an absolute http(s) URL.
        limits: size, timeouts, deadline, redirects.
        credential: sent as ``Authorization`` only to its own origin, and never after leaving it.
        policy: which internal addresses may be reached (default: none).

    Raises:
        FetchError: with ``kind`` saying why; its message never contains the response body.
    """
    limits = limits or DownloadLimits()
    policy = policy or AddressPolicy()
    deadline = _Deadline(limits.deadline)
    guard = _Guard(policy, deadline)
    shown = short(url)
    try:
        return _follow(guard, url, limits, credential, deadline)
    except FetchError:
        raise
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = _blocked_reason(exc)
        if reason:
            raise FetchError(f"{shown}: {reason}", "blocked") from None
        if deadline.expired or isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
            raise _timeout(shown, limits) from None
        raise FetchError(f"{shown} cannot be fetched ({type(exc).__name__})", "connection") from None
    finally:
        deadline.cancel()


def _timeout(shown: str, limits: DownloadLimits) -> FetchError:
    return FetchError(f"{shown}: no complete answer within {limits.deadline:g} s (connect/read timeout "
                      f"{limits.timeout:g} s)", "timeout")


REDIRECTS = (301, 302, 303, 307, 308)


def _follow(guard: _Guard, url: str, limits: DownloadLimits, credential: Credential | None,
            deadline: _Deadline) -> bytes:
    current, credential_ok, shown = url, credential is not None, short(url)
    for _ in range(limits.max_redirects + 1):
        where = origin(current)
        headers = {"Accept-Encoding": "identity", "User-Agent": "vl4pose-fetch"}
        if credential is not None and credential_ok:
            if where == credential.origin:
                headers["Authorization"] = credential.header
            else:
                credential_ok = False  # once the chain leaves the credential's origin it never gets it again
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _timeout(shown, limits)
        parts = urllib.parse.urlsplit(current)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool = _pool(guard, where, min(limits.timeout, remaining))
        try:
            response = pool.urlopen("GET", target, headers=headers, redirect=False, retries=False,
                                    preload_content=False, assert_same_host=False)
            try:
                if response.status in REDIRECTS and response.headers.get("Location"):
                    current = urllib.parse.urljoin(current, response.headers["Location"])
                    continue
                _check_status(response.status, shown)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limits.max_bytes:
                    raise _too_large(shown, int(declared), limits)
                return _read(response, shown, limits, deadline)
            finally:
                response.release_conn()
                response.close()
        finally:
            pool.close()
    raise FetchError(f"{shown}: more than {limits.max_redirects} redirects", "redirects")


def _check_status(status: int, shown: str) -> None:
    if status in (401, 403):
        raise FetchError(f"{shown}: access refused (HTTP {status})", "refused", status)
    if status == 404:
        raise FetchError(f"{shown} not found (HTTP 404)", "not_found", status)
    if status >= 400 or status < 200:
        raise FetchError(f"{shown}: HTTP {status} from the server", "http", status)


def _read(response: urllib3.BaseHTTPResponse, shown: str, limits: DownloadLimits, deadline: _Deadline) -> bytes:
    chunks, total = [], 0
    for chunk in response.stream(CHUNK, decode_content=True):
        total += len(chunk)
        if total > limits.max_bytes:
            raise _too_large(shown, total, limits)
        if deadline.expired or deadline.remaining() <= 0:
            raise _timeout(shown, limits)
        chunks.append(chunk)
    if deadline.expired:  # the watchdog cut the connection: what arrived is not the whole body
        raise _timeout(shown, limits)
    return b"".join(chunks)


def _too_large(shown: str, size: int, limits: DownloadLimits) -> FetchError:
    return FetchError(f"{shown} is over {size} bytes, more than the limit of {limits.max_bytes}", "too_large")
