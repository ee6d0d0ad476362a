"""The download guard: address policy, concurrent resolution with timeouts, and the proxy that
checks every hop where the connection is made."""

import asyncio
import io
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tasks.download.guard import AddressPolicy, GuardProxy, Resolver, check_host

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
            def do_GET(self):  # noqa: N802
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
            def do_GET(self):  # noqa: N802
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


def _fetch(proxy: GuardProxy, url: str) -> tuple[int, bytes | str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url, "https": proxy.url}))
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, str(e)


def test_every_redirect_hop_is_checked_and_nothing_refused_is_requested(servers):
    with GuardProxy(AddressPolicy(["127.0.0.1/32"]), Resolver(timeout=2)) as proxy:
        base = f"http://127.0.0.1:{servers.p1}"
        assert _fetch(proxy, f"{base}/img.jpg") == (200, _jpeg())
        assert _fetch(proxy, f"{base}/to-ok")[0] == 200
        code, msg = _fetch(proxy, f"{base}/to-refused")
        assert code == 403 and "openwit-guard refused loopback_address" in msg
        code, msg = _fetch(proxy, f"{base}/to-metadata")
        assert code == 403 and "link_local_address" in msg
        code, _ = _fetch(proxy, f"http://127.0.0.2:{servers.p2}/direct.jpg")
        assert code == 403
        assert dict(proxy.refused) == {"loopback_address": 2, "link_local_address": 1}
    assert servers.forbidden_hits == []


def test_a_changing_dns_answer_cannot_move_the_connection(servers):
    """DNS rebinding: the name first answers an allowed address, then a refused one. The guard
    resolves once and connects to the address it checked."""
    answers = iter([["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]])

    async def rebinding(host):
        return next(answers)

    with GuardProxy(AddressPolicy(["127.0.0.1/32"]), Resolver(timeout=2, lookup=rebinding)) as proxy:
        proxy.resolve_all(["rebind.example"])  # the pre-pass: allowed
        assert _fetch(proxy, f"http://rebind.example:{servers.p1}/img.jpg") == (200, _jpeg())
        assert _fetch(proxy, f"http://127.0.0.1:{servers.p1}/to-name")[0] == 200
    assert servers.forbidden_hits == []
