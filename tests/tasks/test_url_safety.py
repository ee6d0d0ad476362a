import pytest

from tasks.url_safety import UrlGuard


@pytest.mark.parametrize("url,reason", [
    ("http://127.0.0.2:8765/x.jpg", "loopback_address"),
    ("http://10.0.0.1/x.jpg", "private_address"),
    ("http://169.254.169.254/latest/meta-data/", "link_local_address"),
    ("http://[::1]/x.jpg", "loopback_address"),
    ("http://224.0.0.1/x.jpg", "multicast_address"),
    ("file:///etc/passwd", "scheme_not_http"),
    ("ftp://127.0.0.1/x.jpg", "scheme_not_http"),
    ("http://localhost:8765/x.jpg", "loopback_address"),
])
def test_refused_by_default(url, reason):
    assert UrlGuard().check(url) == reason


def test_allowed_network_is_exact():
    g = UrlGuard(["127.0.0.1/32"])
    assert g.check("http://127.0.0.1:8765/img/1.jpg") is None
    assert g.check("http://127.0.0.2:8765/img/1.jpg") == "loopback_address"
    assert g.check("http://10.0.0.1/") == "private_address"


def test_public_literal_is_allowed():
    assert UrlGuard().check("http://93.184.216.34/a.jpg") is None
