"""Where webhooks may go: URL rules, and no private networks unless allowed.

An endpoint URL is chosen by a client; without this check the node would
POST, on its behalf, to its own loopback, its cloud metadata service or the
bank's private network (SSRF). Names are checked again at delivery time,
after resolution, because DNS may change after registration.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL = 2048


class DestinationError(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def check_url(url: str, allow_private: bool) -> str:
    """The URL if it may be an endpoint, else DestinationError (never echoes the URL)."""
    if len(url) > MAX_URL:
        raise DestinationError("invalid_url", f"at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationError("invalid_url", "not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DestinationError("invalid_url", "an http(s) URL with a host is required")
    if parts.username or parts.password:
        raise DestinationError("invalid_url", "credentials in the URL are not allowed")
    if parts.fragment:
        raise DestinationError("invalid_url", "a fragment is not sent; remove it")
    if port == 0:
        raise DestinationError("invalid_url", "port 0")
    if not allow_private:
        if parts.scheme != "https":
            raise DestinationError("invalid_url", "https is required")
        host = parts.hostname
        if host == "localhost" or host.endswith(".localhost") or _literal_private(host):
            raise DestinationError("destination_not_allowed", "private or loopback address")
    return url


def _literal_private(host: str) -> bool:
    try:
        return not _public(ipaddress.ip_address(host))
    except ValueError:
        return False  # a name: checked when resolved


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


async def check_resolved(url: str, allow_private: bool) -> None:
    """Refuse a name that resolves to a non-public address (DestinationError)."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise DestinationError("dns_error", "name does not resolve") from None
    for info in infos:
        if not _public(ipaddress.ip_address(info[4][0])):
            raise DestinationError("destination_not_allowed", "resolves to a private address")
