"""Refuse URLs a crawler must not fetch, before anything is fetched.

Only http(s) is allowed, and the host must resolve to public addresses only: private,
loopback, link-local (169.254.169.254 is the cloud metadata service), multicast, reserved and
unspecified addresses are refused unless the spec allows a network that holds them
(`download.allow_networks: ["127.0.0.1/32"]` in the sample spec).

Limitation: img2dataset resolves the name again when it fetches and follows redirects, so a
host that changes its DNS answer between check and fetch (DNS rebinding) or redirects to a
private address is not caught here; run large crawls on a network that blocks those ranges.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit


class UrlGuard:
    def __init__(self, allow_networks: list[str] | None = None):
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in (allow_networks or [])]

    @staticmethod
    @lru_cache(maxsize=65536)
    def _resolve(host: str) -> tuple[str, ...] | None:
        try:
            return tuple(sorted({ai[4][0] for ai in socket.getaddrinfo(host, None)}))
        except (socket.gaierror, UnicodeError, OSError):
            return None

    def _address_reason(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        if any(ip in n for n in self.allowed):
            return None
        for flag in ("is_loopback", "is_link_local", "is_private", "is_multicast", "is_reserved", "is_unspecified"):
            if getattr(ip, flag):
                return flag.removeprefix("is_") + "_address"
        return None

    def check(self, url: str) -> str | None:
        """None when the URL may be fetched, else the reason it is refused."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return "invalid_url"
        if parts.scheme not in ("http", "https"):
            return "scheme_not_http"
        if not host:
            return "no_host"
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            resolved = self._resolve(host)
            if not resolved:
                return "dns_failure"
            addrs = [ipaddress.ip_address(a.split("%")[0]) for a in resolved]
        for ip in addrs:
            reason = self._address_reason(ip)
            if reason:
                return reason
        return None
