"""Bounded, credential-safe HTTP downloads, shared by the ML backend and the coordinator.

Built on ``urllib3`` (:mod:`vl4pose.fetch.download`); what may be reached and sent is :mod:`vl4pose.fetch.policy`.

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

from vl4pose.fetch.download import download
from vl4pose.fetch.policy import (AddressPolicy, BlockedAddress, Credential, DownloadLimits, FetchError, Network,
                                  Origin, is_internal, origin, parse_networks, short)

__all__ = ["AddressPolicy", "BlockedAddress", "Credential", "DownloadLimits", "FetchError", "Network", "Origin",
           "download", "is_internal", "origin", "parse_networks", "short"]
