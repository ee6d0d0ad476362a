"""The download guard: address policy, concurrent resolution with timeouts, and the connection
guard in Python's socket layer, tested as the property users rely on: a process started as
img2dataset's workers are cannot reach a refused address with any client (urllib, requests,
httpx, aiohttp, a raw socket), directly or through a redirect, and no request reaches the
refused server; where the guard cannot be active, nothing is fetched at all."""

import asyncio
import io
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tasks.download.guard import (
    AddressPolicy,
    ConnectionGuard,
    GuardInactive,
    Resolver,
    check_host,
    check_workers_guarded,
    worker_env,
)
from tests.conftest import free_port


def _reason(url: str, allow=None) -> str | None:
    policy = AddressPolicy(allow)
    reason, host = policy.url_reason(url)
    if reason:
        return reason
    return check_host(policy, asyncio.run(Resolver(timeout=5).resolve(host)))[0]


@pytest.mark.parametrize("url,reason", [
    ("http://127.0.0.2:8765/x.jpg", "loopback_address"),
    ("http://10.0.0.1/x.jpg", "private_address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata_address"),
    ("http://169.254.1.1/x.jpg", "link_local_address"),
    ("http://100.64.0.1/x.jpg", "shared_address"),
    ("http://100.100.100.200/latest/meta-data/", "metadata_address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata_address"),
    ("http://[2002:7f00:1::]/x.jpg", "loopback_address"),  # 6to4 around 127.0.0.1
    ("http://[::ffff:127.0.0.1]/x.jpg", "loopback_address"),  # v4-mapped
    ("http://[64:ff9b::a00:1]/x.jpg", "private_address"),  # NAT64 around 10.0.0.1
    ("http://192.0.2.1/x.jpg", "private_address"),  # documentation (TEST-NET-1)
    ("http://[::1]/x.jpg", "loopback_address"),
    ("http://224.0.0.1/x.jpg", "multicast_address"),
    ("file:///etc/passwd", "local_file_outside_inputs"),  # only crawl.local rows may name files
    ("ftp://127.0.0.1/x.jpg", "scheme_not_http"),
    ("http://localhost:8765/x.jpg", "loopback_address"),
    ("http://no-such-host.invalid/x.jpg", "dns_failure"),
])
def test_refused_by_default(url, reason):
    assert _reason(url) == reason


def test_allowed_network_is_exact():
    assert _reason("http://127.0.0.1:8765/img/1.jpg", ["127.0.0.1/32"]) is None
    assert _reason("http://127.0.0.2:8765/img/1.jpg", ["127.0.0.1/32"]) == "loopback_address"
    assert _reason("http://10.0.0.1/", ["127.0.0.1/32"]) == "private_address"
    assert _reason("http://93.184.216.34/a.jpg") is None


def test_a_metadata_address_is_allowed_only_when_named_alone():
    assert AddressPolicy(["169.254.0.0/16"]).address_reason("169.254.169.254") == "metadata_address"
    assert AddressPolicy(["169.254.0.0/16"]).address_reason("169.254.1.1") is None
    assert AddressPolicy(["169.254.169.254/32"]).address_reason("169.254.169.254") is None
    assert AddressPolicy(["127.0.0.1/32"]).address_reason("::ffff:127.0.0.1") is None  # the same address, wrapped


def test_a_host_with_one_private_answer_is_refused():
    assert check_host(AddressPolicy(), ("93.184.216.34", "10.1.2.3")) == ("private_address", None)


def test_resolution_is_concurrent_cached_and_bounded():
    calls = []

    async def never_answers(host):
        calls.append(host)
        await asyncio.sleep(3600)

    r = Resolver(timeout=0.5, concurrency=1000, lookup=never_answers)
    hosts = [f"h{i}.example" for i in range(5000)] * 2  # each host named twice
    t0 = time.perf_counter()
    out = asyncio.run(r.resolve_all(hosts))
    assert time.perf_counter() - t0 < 10  # 5,000 lookups of 0.5 s, 1,000 in flight: ~2.5 s
    assert set(out.values()) == {"dns_timeout"} and len(calls) == 5000 and r.max_in_flight == 1000


# ----------------------------------------------------------------------------- the proxy
def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


class _Servers:
    """127.0.0.1: images and redirects; 127.0.0.2: a server no request may ever reach."""

    def __init__(self):
        self.forbidden_hits: list[str] = []
        self.p1, self.p2 = free_port(), free_port()
        outer = self

        class Allowed(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/img.jpg":
                    body = _jpeg()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                target = {"/to-refused": f"http://127.0.0.2:{outer.p2}/secret.jpg",
                          "/to-metadata": "http://169.254.169.254/latest/meta-data/iam.jpg",
                          "/to-ok": "/img.jpg", "/to-name": f"http://rebind.example:{outer.p1}/img.jpg"}[self.path]
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        class Forbidden(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.forbidden_hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.servers = [ThreadingHTTPServer(("127.0.0.1", self.p1), Allowed), ThreadingHTTPServer(("127.0.0.2", self.p2), Forbidden)]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


@pytest.fixture
def servers():
    s = _Servers()
    yield s
    s.close()


def _fetch(guard: ConnectionGuard, url: str) -> tuple[int | None, bytes | str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with guard.installed(), opener.open(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, str(e)
    except urllib.error.URLError as e:
        return None, str(e)


def test_every_redirect_hop_is_checked_and_nothing_refused_is_requested(servers):
    guard = ConnectionGuard(AddressPolicy(["127.0.0.1/32"]))
    base = f"http://127.0.0.1:{servers.p1}"
    assert _fetch(guard, f"{base}/img.jpg") == (200, _jpeg())
    assert _fetch(guard, f"{base}/to-ok")[0] == 200
    code, msg = _fetch(guard, f"{base}/to-refused")
    assert code is None and "openwit-guard refused loopback_address (127.0.0.2)" in msg
    code, msg = _fetch(guard, f"{base}/to-metadata")
    assert code is None and "openwit-guard refused metadata_address" in msg
    assert "loopback_address" in _fetch(guard, f"http://127.0.0.2:{servers.p2}/direct.jpg")[1]
    assert servers.forbidden_hits == []


def test_a_changing_dns_answer_cannot_move_the_connection(servers, monkeypatch):
    """DNS rebinding: the pre-pass saw an allowed address; by fetch time the name answers a
    refused one. The guard connects to the address it checked and never asks again."""
    import socket

    real = socket.getaddrinfo

    def rebound(host, *a, **k):  # names now answer the refused address; literals resolve as ever
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 0))] if host.endswith(".example") else real(host, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    guard = ConnectionGuard(AddressPolicy(["127.0.0.1/32"]), pinned={"rebind.example": ["127.0.0.1"]})
    assert _fetch(guard, f"http://rebind.example:{servers.p1}/img.jpg") == (200, _jpeg())
    assert _fetch(guard, f"http://127.0.0.1:{servers.p1}/to-name")[0] == 200
    assert "loopback_address (127.0.0.2 of fresh.example)" in _fetch(guard, f"http://fresh.example:{servers.p2}/x.jpg")[1]
    assert servers.forbidden_hits == []
    assert not hasattr(socket, "openwit_guard") and "connect" not in socket.socket.__dict__  # uninstalled after the block


# ----------------------------------------------------------------------------- in a guarded worker process
CLIENTS = r"""
import asyncio, json, socket, sys, urllib.request

def urllib_get(url):
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
        return r.status

def requests_get(url):
    import requests
    s = requests.Session()
    s.trust_env = False
    return s.get(url, timeout=5).status_code

def httpx_get(url):
    import httpx
    return httpx.get(url, timeout=5, follow_redirects=True, trust_env=False).status_code

def aiohttp_get(url):
    import aiohttp
    async def go():
        async with aiohttp.ClientSession(trust_env=False) as s, s.get(url) as r:
            return r.status
    return asyncio.run(go())

def raw_socket(url):
    netloc, _, path = url.split("//")[1].partition("/")
    host, port = netloc.rsplit(":", 1)
    host = host.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    s.connect((host, int(port)))
    s.sendall(f"GET /{path} HTTP/1.0\r\n\r\n".encode())
    return int(s.recv(64).split()[1])

out = {}
for name in sys.argv[2].split(","):
    for url in sys.argv[3:]:
        try:
            out[f"{name} {url}"] = globals()[name](url)
        except Exception as e:
            out[f"{name} {url}"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _in_worker(env: dict, clients: str, *urls: str) -> dict:
    """Run CLIENTS in a fresh interpreter started with `env`, as img2dataset starts its workers."""
    import json
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = subprocess.run([sys.executable, "-c", CLIENTS, "x", clients, *urls], env={**base, **env}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _worker_env(tmp_path, allow, pinned=None) -> dict:
    import json

    f = tmp_path / "pinned.json"
    f.write_text(json.dumps(pinned or {}))
    return worker_env(allow, f)


ALL = "urllib_get,requests_get,httpx_get,aiohttp_get"


def test_no_client_in_a_guarded_worker_reaches_a_refused_address(servers, tmp_path):
    env = _worker_env(tmp_path, ["127.0.0.1/32"])
    ok, direct, redirect = (f"http://127.0.0.1:{servers.p1}/img.jpg", f"http://127.0.0.2:{servers.p2}/direct.jpg",
                            f"http://127.0.0.1:{servers.p1}/to-refused")
    got = _in_worker(env, ALL + ",raw_socket", ok, direct)
    got.update(_in_worker(env, ALL, redirect))
    for client in ALL.split(","):
        assert got[f"{client} {ok}"] == 200, got  # the guard lets allowed addresses through, for every client
        for url in (direct, redirect):
            assert "openwit-guard refused loopback_address (127.0.0.2)" in str(got[f"{client} {url}"]), (client, url, got)
    assert got[f"raw_socket {ok}"] == 200 and "openwit-guard refused loopback_address" in got[f"raw_socket {direct}"]
    assert servers.forbidden_hits == []  # the refused server never saw a request


def test_wrapped_and_shared_addresses_are_refused_at_the_socket(servers, tmp_path):
    env = _worker_env(tmp_path, ["127.0.0.1/32"])
    urls = [f"http://[::ffff:127.0.0.2]:{servers.p2}/x", f"http://[2002:7f00:2::]:{servers.p2}/x", "http://100.64.0.1:80/x",
            "http://100.100.100.200:80/latest/meta-data/"]
    got = _in_worker(env, "raw_socket,urllib_get", *urls)
    for client in ("raw_socket", "urllib_get"):
        reasons = [str(got[f"{client} {u}"]) for u in urls]
        assert "loopback_address (::ffff:127.0.0.2)" in reasons[0] and "loopback_address (2002:7f00:2::)" in reasons[1]
        assert "shared_address (100.64.0.1)" in reasons[2] and "metadata_address (100.100.100.200)" in reasons[3]
    assert servers.forbidden_hits == []


def test_every_pinned_address_is_tried_in_order_each_checked(servers, tmp_path):
    """A host whose first address does not answer and whose second does (a dual-stack host on a
    machine without IPv6 looks like this): the fetch falls back to the second; a name pinned to a
    refused address is refused whatever DNS says."""
    env = _worker_env(tmp_path, ["127.0.0.1/32", "127.0.0.3/32"],
                      pinned={"two.test": ["127.0.0.3", "127.0.0.1"], "bad.test": ["127.0.0.2"]})
    two, bad = f"http://two.test:{servers.p1}/img.jpg", f"http://bad.test:{servers.p2}/x.jpg"
    got = _in_worker(env, "urllib_get,requests_get,httpx_get", two, bad)
    for client in ("urllib_get", "requests_get", "httpx_get"):
        assert got[f"{client} {two}"] == 200, got
        assert "loopback_address (127.0.0.2 of bad.test)" in str(got[f"{client} {bad}"]), got
    assert servers.forbidden_hits == []


def test_a_worker_without_the_guard_fetches_nothing_and_the_stage_refuses_to_start(servers, tmp_path):
    import os

    env = _worker_env(tmp_path, ["127.0.0.1/32"])
    check_workers_guarded(env)  # a worker as the download stage starts them: guarded
    # the guard cannot be installed (a broken policy here; a missing package on a node alike): it fails closed
    broken = {**env, "OPENWIT_GUARD": "{not json"}
    got = _in_worker(broken, "urllib_get,raw_socket", f"http://127.0.0.1:{servers.p1}/img.jpg")
    assert all("openwit-guard not active: JSONDecodeError" in str(v) for v in got.values()), got
    with pytest.raises(GuardInactive, match="not active in img2dataset's worker processes on this machine .*openwit-guard not active"):
        check_workers_guarded(broken)
    # a node where sitecustomize is not on the path at all: the stage's check stops it
    bare = {**env, "PYTHONPATH": os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if "sitecustom" not in p)}
    with pytest.raises(GuardInactive, match=r"on this machine \(absent\).*install openwit"):
        check_workers_guarded(bare)
