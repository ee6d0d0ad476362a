"""The download guard: address policy, concurrent resolution with timeouts, and the connection
guard that checks every hop where the connection is made."""

import asyncio
import io
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tasks.download.guard import AddressPolicy, ConnectionGuard, Resolver, check_host, worker_env
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
    ("http://169.254.169.254/latest/meta-data/", "link_local_address"),
    ("http://[::1]/x.jpg", "loopback_address"),
    ("http://224.0.0.1/x.jpg", "multicast_address"),
    ("file:///etc/passwd", "scheme_not_http"),
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
    assert code is None and "openwit-guard refused link_local_address" in msg
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
    assert "loopback_address (fresh.example)" in _fetch(guard, f"http://fresh.example:{servers.p2}/x.jpg")[1]
    assert servers.forbidden_hits == []


def test_processes_started_with_the_worker_env_are_guarded(servers, tmp_path):
    """img2dataset's spawned workers: the guard is installed at interpreter start-up."""
    import json
    import os
    import subprocess
    import sys

    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps({}))
    code = ("import urllib.request, sys\n"
            "o = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
            "print(o.open(sys.argv[1], timeout=5).status)\n"
            "try:\n    o.open(sys.argv[2], timeout=5)\nexcept Exception as e:\n    print(e)\n")
    env = {**os.environ, **worker_env(["127.0.0.1/32"], pinned)}
    out = subprocess.run([sys.executable, "-c", code, f"http://127.0.0.1:{servers.p1}/img.jpg",
                          f"http://127.0.0.1:{servers.p1}/to-refused"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "200" and "openwit-guard refused loopback_address" in out.stdout
    assert servers.forbidden_hits == []
