"""The crawler's egress guard: which addresses may be fetched, checked where the connection is made.

Three parts:

* `AddressPolicy`: http(s) only; every address a host resolves to must be public. Private,
  loopback, link-local (169.254.169.254 is the cloud metadata service), multicast, reserved and
  unspecified addresses are refused unless `download.allow_networks` holds them.
* `Resolver`: host names resolved concurrently with c-ares (aiodns): thousands of lookups in
  flight, a timeout per lookup, one lookup per host (cached, failures included). A table with
  10,000 hosts that never answer costs about `timeout x hosts / concurrency`, not hours.
* `ConnectionGuard`: replaces `socket.create_connection` in img2dataset's worker processes
  (installed at their start-up by `sitecustom/sitecustomize.py`, which the download stage puts on
  their PYTHONPATH with the policy in OPENWIT_GUARD). urllib opens every connection, every
  redirect hop included, through it: the host's addresses come from the pre-pass (pinned) or
  are resolved there, every address is checked, and the socket connects to the address that
  was checked, so a DNS answer that changes between check and fetch (rebinding) cannot move
  the connection. A refused hop raises `openwit-guard refused <reason>` before any byte is sent.
  Unlike a proxy in front of the workers, this adds no hop and no process: the stage runs at
  plain img2dataset's speed (bench/download.py).

The pre-pass (`tasks/download/driver.py:prepare_input`) uses the same policy and resolver to drop
rows that can never be fetched before img2dataset sees them, each with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

Lookup = Callable[[str], Awaitable[list[str]]]  # host -> addresses; raises on failure


class DnsFailure(Exception):
    pass


class AddressPolicy:
    def __init__(self, allow_networks: list[str] | None = None):
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in (allow_networks or [])]

    def address_reason(self, addr: str) -> str | None:
        """None when this address may be connected to, else the reason it is refused."""
        ip = ipaddress.ip_address(addr.split("%")[0])
        if any(ip in n for n in self.allowed):
            return None
        for flag in ("is_loopback", "is_link_local", "is_private", "is_multicast", "is_reserved", "is_unspecified"):
            if getattr(ip, flag):
                return flag.removeprefix("is_") + "_address"
        return None

    @staticmethod
    def url_reason(url: str) -> tuple[str | None, str | None]:
        """(reason, host): a reason when the URL itself can never be fetched, else its host."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return "invalid_url", None
        if parts.scheme == "file" and not parts.netloc:  # crawl.local's own images: read from disk, no connection
            return None, ""
        if parts.scheme not in ("http", "https"):
            return "scheme_not_http", None
        if not host:
            return "no_host", None
        return None, host


def ip_literal(host: str) -> tuple[str] | None:
    """(address,) when `host` is an IP address (IPv6 with or without brackets), else None."""
    try:
        return (str(ipaddress.ip_address(host.strip("[]"))),)
    except ValueError:
        return None


async def aiodns_lookup_factory(timeout: float) -> Lookup:
    import aiodns

    resolver = aiodns.DNSResolver(timeout=timeout, tries=1)

    async def lookup(host: str) -> list[str]:
        try:
            res = await resolver.getaddrinfo(host, port=None)
        except aiodns.error.DNSError as e:
            raise DnsFailure(str(e)) from None
        return sorted({n.addr[0].decode() if isinstance(n.addr[0], bytes) else n.addr[0] for n in res.nodes})

    return lookup


class Resolver:
    """Concurrent, cached host resolution. `lookup` is injectable (tests use a fake)."""

    def __init__(self, timeout: float = 5.0, concurrency: int = 1000, lookup: Lookup | None = None):
        self.timeout, self.concurrency = timeout, concurrency
        self._lookup = lookup
        self.cache: dict[str, tuple[str, ...] | str] = {}  # host -> addresses, or a failure reason
        self.in_flight = 0
        self.max_in_flight = 0
        self.lookups = 0
        self._pending: dict[str, asyncio.Future] = {}

    async def _get_lookup(self) -> Lookup:
        if self._lookup is None:
            self._lookup = await aiodns_lookup_factory(self.timeout)
        return self._lookup

    async def resolve(self, host: str) -> tuple[str, ...] | str:
        """Addresses of `host` (a literal IP resolves to itself), or "dns_failure" / "dns_timeout"."""
        if literal := ip_literal(host):
            return literal
        if host in self.cache:
            return self.cache[host]
        if host in self._pending:  # one lookup per host, however many rows name it
            return await asyncio.shield(self._pending[host])
        fut = asyncio.get_running_loop().create_future()
        self._pending[host] = fut
        lookup = await self._get_lookup()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.lookups += 1
        try:
            addrs = await asyncio.wait_for(lookup(host), self.timeout)
            result: tuple[str, ...] | str = tuple(addrs) if addrs else "dns_failure"
        except TimeoutError:
            result = "dns_timeout"
        except (DnsFailure, OSError, UnicodeError, ValueError):
            result = "dns_failure"
        finally:
            self.in_flight -= 1
        self.cache[host] = result
        fut.set_result(result)
        del self._pending[host]
        return result

    async def resolve_all(self, hosts: Iterable[str], progress: Callable[[int], None] | None = None) -> dict[str, tuple[str, ...] | str]:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(h: str):
            async with sem:
                r = await self.resolve(h)
            if progress:
                progress(1)
            return h, r

        return dict(await asyncio.gather(*(one(h) for h in set(hosts))))


def check_host(policy: AddressPolicy, resolved: tuple[str, ...] | str) -> tuple[str | None, str | None]:
    """(reason, address to connect to): every resolved address must pass, so a host that also
    answers with a private address is refused (it could be rebound to it)."""
    if isinstance(resolved, str):
        return resolved, None
    for a in resolved:
        reason = policy.address_reason(a)
        if reason:
            return reason, None
    return None, resolved[0]


# ----------------------------------------------------------------------------- at connection time
REFUSED_PHRASE = "openwit-guard refused"
GUARD_ENV = "OPENWIT_GUARD"
SITECUSTOM_DIR = Path(__file__).with_name("sitecustom")
_original_create_connection = socket.create_connection


class GuardRefused(ConnectionRefusedError):
    """A connection the policy refuses; urllib reports it as `<urlopen error openwit-guard refused ...>`."""


class ConnectionGuard:
    """`socket.create_connection` that checks every address before connecting to it."""

    def __init__(self, policy: AddressPolicy, pinned: dict[str, list[str]] | None = None):
        self.policy = policy
        self.pinned = {h: tuple(a) for h, a in (pinned or {}).items()}

    def _addresses(self, host: str) -> tuple[str, ...] | str:
        if literal := ip_literal(host):
            return literal
        if host in self.pinned:
            return self.pinned[host]
        try:  # a host the pre-pass did not see (a redirect target): resolved here, then pinned
            addrs = tuple(sorted({ai[4][0] for ai in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}))
        except (OSError, UnicodeError):
            return "dns_failure"
        self.pinned[host] = addrs
        return addrs

    def create_connection(self, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **kwargs):
        host, port = address[0], address[1]
        reason, addr = check_host(self.policy, self._addresses(host))
        if reason:
            raise GuardRefused(f"{REFUSED_PHRASE} {reason} ({host})")
        return _original_create_connection((addr, port), timeout, source_address, **kwargs)

    @contextlib.contextmanager
    def installed(self) -> Iterator[ConnectionGuard]:
        socket.create_connection = self.create_connection
        try:
            yield self
        finally:
            socket.create_connection = _original_create_connection


def worker_env(policy_networks: list[str], pinned_file: Path) -> dict[str, str]:
    """Environment for processes that fetch: their start-up installs the guard (sitecustomize)."""
    import tasks

    roots = [str(SITECUSTOM_DIR), str(Path(tasks.__file__).resolve().parents[1])]
    old = os.environ.get("PYTHONPATH")
    return {GUARD_ENV: json.dumps({"allow_networks": policy_networks, "pinned": str(pinned_file)}),
            "PYTHONPATH": os.pathsep.join(roots + ([old] if old else []))}


def install_from_env() -> None:
    """Called by sitecustomize at interpreter start-up when OPENWIT_GUARD is set."""
    cfg = json.loads(os.environ[GUARD_ENV])
    pinned = json.loads(Path(cfg["pinned"]).read_text()) if cfg.get("pinned") and Path(cfg["pinned"]).exists() else {}
    guard = ConnectionGuard(AddressPolicy(cfg.get("allow_networks")), pinned)
    socket.create_connection = guard.create_connection
