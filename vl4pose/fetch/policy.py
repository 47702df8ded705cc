"""What a download may do: origins, credentials, which internal addresses it may reach, and its limits.

The data half of :mod:`vl4pose.fetch` (the transport that enforces it is :mod:`vl4pose.fetch.download`).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from vl4pose.errors import VL4PoseError

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
