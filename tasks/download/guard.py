"""The crawler's egress guard: which addresses may be fetched, checked where the connection is made.

Three parts:

* `AddressPolicy`: http(s) only; every address a host resolves to must be public. Private,
  loopback, link-local (169.254.169.254 is the cloud metadata service), multicast, reserved and
  unspecified addresses are refused unless `download.allow_networks` holds them.
* `Resolver`: host names resolved concurrently with c-ares (aiodns): thousands of lookups in
  flight, a timeout per lookup, one lookup per host (cached, failures included). A table with
  10,000 hosts that never answer costs about `timeout x hosts / concurrency`, not hours.
* `GuardProxy`: an HTTP/HTTPS forward proxy on 127.0.0.1 that img2dataset's urllib goes
  through (`http_proxy` / `https_proxy` in the environment of its worker processes). Every
  request, every redirect hop included, names its host to the proxy; the proxy resolves it
  (from the cache the pre-pass filled), checks every address, and connects to the address it
  checked, so a DNS answer that changes between check and fetch (rebinding) cannot move the
  connection. A refused hop gets `403 openwit-guard refused <reason>` and is never requested.

The pre-pass (`tasks/download/driver.py:prepare_input`) uses the same policy and resolver to drop
rows that can never be fetched before img2dataset sees them, each with its reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
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
        if parts.scheme not in ("http", "https"):
            return "scheme_not_http", None
        if not host:
            return "no_host", None
        return None, host


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
        try:
            return (str(ipaddress.ip_address(host.strip("[]"))),)
        except ValueError:
            pass
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
        except asyncio.TimeoutError:
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


# ----------------------------------------------------------------------------- the proxy
REFUSED_PHRASE = "openwit-guard refused"


class GuardProxy:
    """A forward proxy that enforces `policy` on every connection; runs its own event loop in a
    daemon thread. `with GuardProxy(...) as p:` then `p.env()` for the fetching processes."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver, host: str = "127.0.0.1", port: int = 0,
                 connect_timeout: float = 10.0):
        self.policy, self.resolver = policy, resolver
        self.host, self.port, self.connect_timeout = host, port, connect_timeout
        self.refused: Counter = Counter()  # reason -> connections refused
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"http_proxy": self.url, "https_proxy": self.url, "HTTP_PROXY": self.url, "HTTPS_PROXY": self.url}

    def __enter__(self) -> GuardProxy:
        ready = threading.Event()

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=1024, limit=1 << 16))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="openwit-guard-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the guard proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            await self._server.wait_closed()

        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def resolve_all(self, hosts: Iterable[str], progress: Callable[[int], None] | None = None) -> dict:
        """Resolve on the proxy's loop (the cache the proxy will use), from another thread."""
        return asyncio.run_coroutine_threadsafe(self.resolver.resolve_all(hosts, progress), self._loop).result()

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self.refused[reason] += 1
        body = f"refused by the openwit download guard: {reason}\n".encode()
        writer.write(f"HTTP/1.1 403 {REFUSED_PHRASE} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                     f"X-Openwit-Refused: {reason}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.connect_timeout)
            self.requests += 1
            line, _, rest = head.partition(b"\r\n")
            method, target, version = line.decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                host, port, path = host.strip("[]"), int(port or 443), None
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    return await self._refuse(writer, "scheme_not_http")
                host, port = parts.hostname, parts.port or 80
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            reason, addr = check_host(self.policy, await self.resolver.resolve(host))
            if reason:
                return await self._refuse(writer, reason)
            up_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(addr, port), self.connect_timeout)
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # origin-form request line; the Host header urllib wrote names the original host
                kept = [h for h in rest.split(b"\r\n") if h and not h.lower().startswith((b"proxy-", b"connection:"))]
                upstream_writer.write(f"{method} {path} {version}\r\n".encode("latin-1") + b"\r\n".join(kept)
                                      + b"\r\nConnection: close\r\n\r\n")
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError, ValueError):
            if upstream_writer is None and not writer.is_closing():
                try:
                    writer.write(b"HTTP/1.1 502 openwit-guard upstream unreachable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                except (ConnectionError, OSError):
                    pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
