"""The crawler's egress guard: which addresses may be fetched, checked below every HTTP client.

Three parts:

* `AddressPolicy`: http(s) only; every address must be global (`ipaddress`'s `is_global`: not
  private, loopback, link-local, shared 100.64.0.0/10, reserved, documentation, ...), addresses
  wrapped in IPv6 (`::ffff:a.b.c.d`, 6to4 `2002::/16`, NAT64 `64:ff9b::/96`) are judged by the
  IPv4 address inside, and the cloud metadata services (169.254.169.254, 169.254.170.2,
  100.100.100.200, fd00:ec2::254) are refused unless `download.allow_networks` names that very
  address. Anything else `allow_networks` holds is allowed.
* `Resolver`: host names resolved concurrently with c-ares (aiodns): thousands of lookups in
  flight, a timeout per lookup, one lookup per host (cached, failures included). A table with
  10,000 hosts that never answer costs about `timeout x hosts / concurrency`, not hours.
* `ConnectionGuard`: in img2dataset's worker processes (installed at interpreter start-up by
  `sitecustom/sitecustomize.py`, which the download stage puts on their PYTHONPATH with the policy
  in OPENWIT_GUARD) it replaces, on Python's `socket.socket` class, `connect`, `connect_ex` and
  `sendto`, and the module's `getaddrinfo`. So every connection made through Python's socket
  module is checked where it is made, every redirect hop included, whatever the client: urllib
  and http.client, urllib3 / requests, httpx, asyncio / aiohttp, raw sockets. A host name the
  pre-pass resolved answers with the pre-pass's addresses in the resolver's order (pinned: a DNS
  answer that changes between check and fetch cannot move the connection), and
  `socket.create_connection` tries each of them in turn, each checked. A refused address raises
  `openwit-guard refused <reason> (<address>)` before any byte is sent.

  Not covered: C libraries that open their own sockets (pycurl, c-ares) and code that builds a
  `_socket.socket` directly; img2dataset uses neither.

It fails closed: if the guard cannot be installed in a worker (its package not importable on
that node, a broken policy), sitecustomize makes every connection of that process fail with
`openwit-guard not active`, and before img2dataset starts the download stage checks, in a process
started as its workers are (on every Ray node when the distributor is Ray), that the guard is
active there, and stops with one line saying how to fix it if not (`check_workers_guarded`).

The pre-pass (`tasks/download/driver.py:prepare_input`) uses the same policy and resolver to drop
rows that can never be fetched before img2dataset sees them, each with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
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


# cloud instance metadata services: refused even inside an allowed network, unless named alone
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598): Alibaba Cloud's metadata lives here
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_FLAGS = ("is_loopback", "is_link_local", "is_private", "is_multicast", "is_reserved", "is_unspecified")


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (v4-mapped, 6to4, NAT64), else None."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class AddressPolicy:
    def __init__(self, allow_networks: list[str] | None = None):
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in (allow_networks or [])]

    def address_reason(self, addr: str) -> str | None:
        """None when this address may be connected to, else the reason it is refused."""
        ip = ipaddress.ip_address(addr.split("%")[0])
        if (inner := embedded_ipv4(ip)) is not None:
            return self.address_reason(str(inner))
        if ip in METADATA_ADDRESSES:
            return None if any(n.num_addresses == 1 and ip in n for n in self.allowed) else "metadata_address"
        if any(ip in n for n in self.allowed):
            return None
        for flag in _FLAGS:
            if getattr(ip, flag):
                return flag.removeprefix("is_") + "_address"
        if ip in _SHARED:
            return "shared_address"
        return None if ip.is_global else "not_global_address"

    @staticmethod
    def url_reason(url: str, local: bool = False) -> tuple[str | None, str | None]:
        """(reason, host): a reason when the URL itself can never be fetched, else its host ("" for a
        file). A file:// URL is read only for a row of the build's own crawl.local inputs (`local`)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return "invalid_url", None
        if parts.scheme == "file" and not parts.netloc:
            return (None, "") if local else ("local_file_outside_inputs", None)
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
        addrs = [n.addr[0].decode() if isinstance(n.addr[0], bytes) else n.addr[0] for n in res.nodes]
        return list(dict.fromkeys(addrs))  # the resolver's order (connections try them in turn), each once

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
    """(reason, first address): the pre-pass's rule. Every resolved address must pass, so a host
    that also answers with a private address is refused (it could be rebound to it)."""
    if isinstance(resolved, str):
        return resolved, None
    for a in resolved:
        reason = policy.address_reason(a)
        if reason:
            return reason, None
    return None, resolved[0]


# ----------------------------------------------------------------------------- at connection time
REFUSED_PHRASE = "openwit-guard refused"
INACTIVE_PHRASE = "openwit-guard not active"
GUARD_ENV = "OPENWIT_GUARD"
SITECUSTOM_DIR = Path(__file__).with_name("sitecustom")
_SOCKET_METHODS = ("connect", "connect_ex", "sendto")


class GuardRefused(ConnectionRefusedError):
    """A connection the policy refuses; urllib reports it as `<urlopen error openwit-guard refused ...>`."""


def _port(port) -> int:
    if port in (None, ""):
        return 0
    if isinstance(port, bytes):
        port = port.decode()
    return int(port) if str(port).isdigit() else socket.getservbyname(str(port))


class ConnectionGuard:
    """Checks every address a socket of this process connects or sends to (see the module docstring)."""

    def __init__(self, policy: AddressPolicy, pinned: dict[str, list[str]] | None = None):
        self.policy = policy
        self.pinned = {h: tuple(a) for h, a in (pinned or {}).items()}
        self.names: dict[str, str] = {}  # address -> the name that resolved to it (for messages)
        self._real_getaddrinfo = socket.getaddrinfo

    # -- resolution
    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        """socket.getaddrinfo, with pinned hosts answering the pre-pass's addresses in its order."""
        name = host.decode() if isinstance(host, bytes) else host
        if name in self.pinned:
            out = []
            for a in self.pinned[name]:
                fam = socket.AF_INET6 if ":" in a else socket.AF_INET
                if family in (0, fam):
                    st = type or socket.SOCK_STREAM
                    pr = proto or (socket.IPPROTO_TCP if st == socket.SOCK_STREAM else socket.IPPROTO_UDP)
                    out.append((fam, st, pr, "", (a, _port(port)) if fam == socket.AF_INET else (a, _port(port), 0, 0)))
                    self.names[a] = name
            if out:
                return out
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: no pinned address of family {family}")
        res = self._real_getaddrinfo(host, port, family, type, proto, flags)
        if name and not ip_literal(name):
            for r in res:
                self.names[r[4][0]] = name
        return res

    # -- the check
    def checked(self, sock: socket.socket, address):
        """`address` as a checked IP socket address (a name is resolved here, pinned if the pre-pass
        saw it); raises GuardRefused. Non-IP sockets (AF_UNIX) pass unchanged."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return address
        host = address[0].decode() if isinstance(address[0], bytes) else address[0]
        if not ip_literal(host):  # connect(("name", port)) would resolve in C, unchecked: resolve here instead
            infos = self.getaddrinfo(host, address[1], sock.family, sock.type)
            address = infos[0][4]
            host = address[0]
        reason = self.policy.address_reason(host)
        if reason:
            name = self.names.get(host)
            # with errno and strerror, so clients that report only strerror (aiohttp) keep the reason
            raise GuardRefused(errno.ECONNREFUSED, f"{REFUSED_PHRASE} {reason} ({host}{f' of {name}' if name else ''})")
        return address

    @contextlib.contextmanager
    def installed(self) -> Iterator[ConnectionGuard]:
        """Install in this process for the block (the driver's own diagnostic fetches)."""
        saved = install(self)
        try:
            yield self
        finally:
            uninstall(saved)


def install(guard: ConnectionGuard) -> dict:
    """Patch Python's socket layer with `guard`; returns what it replaced (for `uninstall`)."""
    cls = socket.socket
    saved = {m: cls.__dict__.get(m) for m in _SOCKET_METHODS}
    saved["getaddrinfo"] = guard._real_getaddrinfo = socket.getaddrinfo
    saved["state"] = getattr(socket, "openwit_guard", None)
    real = {m: getattr(cls, m) for m in _SOCKET_METHODS}

    def connect(self, address):
        return real["connect"](self, guard.checked(self, address))

    def connect_ex(self, address):
        return real["connect_ex"](self, guard.checked(self, address))

    def sendto(self, data, *args):
        *flags, address = args
        return real["sendto"](self, data, *flags, guard.checked(self, address))

    cls.connect, cls.connect_ex, cls.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = guard.getaddrinfo
    socket.openwit_guard = "active"  # what check_workers_guarded reads
    return saved


def uninstall(saved: dict) -> None:
    for m in _SOCKET_METHODS:
        if saved[m] is None:
            delattr(socket.socket, m)
        else:
            setattr(socket.socket, m, saved[m])
    socket.getaddrinfo = saved["getaddrinfo"]
    if saved["state"] is None:
        del socket.openwit_guard
    else:
        socket.openwit_guard = saved["state"]


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
    install(ConnectionGuard(AddressPolicy(cfg.get("allow_networks")), pinned))


class GuardInactive(RuntimeError):
    """img2dataset's workers would fetch without the guard: the download stage does not start."""


PROBE = "import socket; print(getattr(socket, 'openwit_guard', 'absent'))"


def check_workers_guarded(env: dict[str, str], distributor: str = "multiprocessing") -> None:
    """Start a process as img2dataset starts its workers (this machine's Python with `env`; with
    the Ray distributor, one task on every alive node with `env` as its runtime environment) and
    make sure the guard is active in it. Raises GuardInactive naming the node and the fix."""
    import subprocess
    import sys

    if distributor == "ray":
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0, runtime_env={"env_vars": dict(env)})
        def probe() -> str:
            import socket as s

            return getattr(s, "openwit_guard", "absent")

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        states = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                          for n in nodes])
        where = [(n.get("NodeManagerAddress", n["NodeID"]), st) for n, st in zip(nodes, states)]
    else:
        out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=120, check=False)
        where = [("this machine", out.stdout.strip() or f"absent ({out.stderr.strip()[-300:]})")]
    for node, state in where:
        if state != "active":
            raise GuardInactive(
                f"download: the connection guard is not active in img2dataset's worker processes on {node} ({state}); "
                "nothing was fetched. The workers import tasks/download/sitecustom/sitecustomize.py and the `tasks` package "
                "from PYTHONPATH: install openwit (pip install -e .) at the same path on every node, or run the download "
                "with download.distributor: multiprocessing")
