"""Bounded, credential-safe HTTP downloads, shared by the ML backend and the coordinator.

Built on ``urllib3``, the transport under ``requests`` (which the core ``vl4pose`` package may not import:
``tests/architecture``), because the address check below needs its connection classes anyway.

What every download guarantees:

- **credentials stay with their origin**: an ``Authorization`` header is sent only to the origin (scheme,
  host, port) it belongs to, and never again once a redirect has left that origin;
- **no cookies**: nothing a server sets is stored or sent back (there is no cookie jar at all; ``.netrc`` and
  proxy variables are never read);
- **no internal addresses**: the resolved peer address of every connection (redirects included) is checked;
  loopback, private, link-local, shared and reserved addresses are refused unless the URL's origin is a
  trusted one (Label Studio's own) or its host / network is allow-listed (:class:`AddressPolicy`);
- **a wall-clock deadline** covers the whole download (connect, headers, body, every redirect): a watchdog
  shuts the socket down when it passes, so a server trickling one byte at a time cannot hold a request;
- **a size limit** while streaming.

Redirects are followed by hand (at most ``max_redirects``), each hop checked like the first.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from vl4pose.errors import VL4PoseError

CHUNK = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(VL4PoseError):
    """A download failed. ``kind``: refused (401/403), not_found (404), http (other status), timeout, too_large,
    blocked (an internal address), connection, url (unsupported or malformed), redirects; ``status``: the HTTP
    status when there was one. The message names the URL (shortened) and never the response body."""

    def __init__(self, message: str, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth retrying later (timeouts, connection failures, 5xx, 429)."""
        return self.kind in ("timeout", "connection") or (self.status is not None and
                                                          (self.status >= 500 or self.status == 429))


class BlockedAddress(OSError):
    """A connection reached an address the policy refuses (raised inside the connection, reported as FetchError)."""


def short(url: str, limit: int = 120) -> str:
    """A URL cut to ``limit`` characters, for log lines and messages."""
    return url if len(url) <= limit else url[:limit] + "..."


def origin(url: str) -> Origin:
    """(scheme, host, port) of an http(s) URL, lower-cased, with the default port filled in.

    Raises:
        FetchError: not an http(s) URL with a host, or a malformed port.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError(f"URL {short(url)} is malformed", "url") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise FetchError(f"URL {short(url)} is not an http(s) URL with a host", "url")
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def is_internal(address: str) -> bool:
    """True for loopback, private, link-local, shared (CGNAT), multicast, reserved and unspecified addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (``10.0.0.0/8``, ``::1/128``, a bare address) -> networks; raises ValueError naming a bad one."""
    networks = []
    for value in values:
        value = value.strip()
        if value:
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                raise ValueError(f"{value!r} is not an IP network (expected e.g. 10.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which internal addresses a download may connect to.

    Attributes:
        trusted_origins: origins (Label Studio's own) whose connections may use any address.
        allow_hosts: host names (``images.lan``) or ``host:port`` whose connections may use any address.
        allow_networks: internal networks every download may connect to.
    """

    trusted_origins: frozenset[Origin] = frozenset()
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()

    def with_trusted(self, *urls: str | None) -> "AddressPolicy":
        """This policy with the origins of ``urls`` (None and malformed ones skipped) trusted as well."""
        extra = set()
        for url in urls:
            if url:
                try:
                    extra.add(origin(url))
                except FetchError:
                    pass
        return AddressPolicy(self.trusted_origins | extra, self.allow_hosts, self.allow_networks)

    def check(self, where: Origin, address: str) -> None:
        """Raise :class:`BlockedAddress` when a connection for ``where`` must not use ``address``."""
        if not is_internal(address) or where in self.trusted_origins:
            return
        _, host, port = where
        if host in self.allow_hosts or f"{host}:{port}" in self.allow_hosts:
            return
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in net for net in self.allow_networks):
            return
        raise BlockedAddress(f"{host} resolves to the internal address {address}, which is not allowed; allow it "
                             "with VL4POSE_FETCH_ALLOW_HOSTS or VL4POSE_FETCH_ALLOW_NETWORKS")


@dataclass(frozen=True)
class Credential:
    """An ``Authorization`` header value and the only origin it may be sent to."""

    origin: Origin
    header: str = field(repr=False)

    @classmethod
    def token(cls, url: str, token: str) -> "Credential":
        """Label Studio's ``Token <token>`` for the origin of ``url``."""
        return cls(origin(url), f"Token {token}")


@dataclass(frozen=True)
class DownloadLimits:
    """max_bytes: largest body. timeout: seconds to connect and per read. deadline: seconds for the whole download
    (all redirects included). max_redirects: redirects followed."""

    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0
    deadline: float = 30.0
    max_redirects: int = 5


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
