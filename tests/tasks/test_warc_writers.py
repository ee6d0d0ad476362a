"""WARCs as other tools write them: wget (WARC/1.0, `<uri>`, chunked bodies), warcio (WARC/1.1)
and Common Crawl (WARC/1.0, decoded bodies, X-Crawler-* headers). The candidates stage must find
the same pairs in all three as an independent count over the HTML that was written."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from urllib.parse import urljoin

import pyarrow.parquet as pq
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tasks import stages as build_stages
from tasks.context import make_context
from tasks.specs import BuildSpec

SITE = "http://pages.example.org"


def pages() -> list[tuple[str, str]]:
    """(page url, html): relative, root-relative, absolute and <base href> image URLs."""
    out = []
    for p in range(6):
        url = f"{SITE}/section{p % 2}/page-{p}.html"
        base = f'<base href="{SITE}/static/img/">' if p % 3 == 0 else ""
        tags = [
            f'<img src="pic-{p}-a.jpg" alt="a red circle number {p}">',
            f"<img src='../img/pic-{p}-b.png' title='blue square {p}'>",
            f'<img src="/abs/pic-{p}-c.webp" data-image-title="green star {p}" alt="">',
            f'<img src="{SITE}/full/pic-{p}-d.jpg" alt="yellow  hexagon\n{p}">',
            f'<img src="pic-{p}-e.jpg">',  # no text: not a candidate
            f'<img src="data:image/png;base64,AAAA" alt="inline {p}">',  # data URI: dropped
            f'<img src="logo-{p}.svg" alt="a logo {p}">',  # svg: dropped
        ]
        body = "\n".join(f"<p>{t}</p>" for t in tags)
        out.append((url, f"<!DOCTYPE html><html><head><title>p{p}</title>{base}</head><body>{body}</body></html>"))
    return out


def independent_count(docs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Every <img> with text in alt/title/data-image-title, resolved against the page and <base>."""
    want = set()
    for page, doc in docs:
        m = re.search(r"<base href=\"([^\"]+)\"", doc)
        base = urljoin(page, m.group(1)) if m else page
        for tag in re.findall(r"<img [^>]+>", doc):
            src = re.search(r"src=[\"']([^\"']+)", tag).group(1)
            texts = [t.group(2) for t in re.finditer(r"(alt|title|data-image-title)=[\"']([^\"']*)", tag)]
            for text in dict.fromkeys(" ".join(t.split()) for t in texts if t.strip()):
                if not src.startswith("data:") and not src.endswith(".svg"):
                    want.add((urljoin(base, src), text))
    return want


def _chunked(body: bytes, size: int = 100) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in parts) + b"0\r\n\r\n"


def _raw_record(version: str, headers: list[tuple[str, str]], block: bytes) -> bytes:
    head = f"WARC/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + f"Content-Length: {len(block)}\r\n\r\n"
    return gzip.compress(head.encode() + block + b"\r\n\r\n", mtime=0)


def write_wget_style(path, docs) -> None:
    """As GNU wget --warc-file writes: WARC/1.0, target URIs in angle brackets, a warcinfo and a
    request record per page, bodies stored as sent (chunked, some gzip-encoded), a resource
    record for the log."""
    out = [_raw_record("1.0", [("WARC-Type", "warcinfo"), ("Content-Type", "application/warc-fields")],
                       b"software: Wget/1.21.3 (linux-gnu)\r\nformat: WARC File Format 1.0\r\n")]
    for i, (url, doc) in enumerate(docs):
        host = url.split("/")[2]
        req = f"GET /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n\r\n".encode()
        out.append(_raw_record("1.0", [("WARC-Type", "request"), ("WARC-Target-URI", f"<{url}>"),
                                       ("Content-Type", "application/http;msgtype=request")], req))
        if i % 2:
            body, coding = _chunked(gzip.compress(doc.encode(), mtime=0)), "Content-Encoding: gzip\r\n"
        else:
            body, coding = _chunked(doc.encode()), ""
        resp = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n{coding}Transfer-Encoding: chunked\r\n\r\n").encode() + body
        out.append(_raw_record("1.0", [("WARC-Type", "response"), ("WARC-Target-URI", f"<{url}>"),
                                       ("WARC-IP-Address", "93.184.216.34"),
                                       ("Content-Type", "application/http;msgtype=response")], resp))
    out.append(_raw_record("1.0", [("WARC-Type", "resource"), ("WARC-Target-URI", "<metadata://gnu.org/software/wget/warc/wget.log>"),
                                   ("Content-Type", "text/plain")], b"wget log\n"))
    path.write_bytes(b"".join(out))


def write_warcio_style(path, docs) -> None:
    """As warcio's WARCWriter writes WARC/1.1 (bare URIs, digests), one deflate-encoded body."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True, warc_version="1.1")
    for i, (url, doc) in enumerate(docs):
        body = doc.encode()
        hdrs = [("Content-Type", "text/html; charset=utf-8")]
        if i == 2:
            body = zlib.compress(body)
            hdrs.append(("Content-Encoding", "deflate"))
        hdrs.append(("Content-Length", str(len(body))))
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body),
                                            http_headers=StatusAndHeaders("200 OK", hdrs, protocol="HTTP/1.1")))
    path.write_bytes(buf.getvalue())


def write_commoncrawl_style(path, docs) -> None:
    """As Common Crawl writes: WARC/1.0 with bare URIs, decoded bodies whose original codings
    are kept as X-Crawler-Content-Encoding / X-Crawler-Transfer-Encoding."""
    out = []
    for url, doc in docs:
        body = doc.encode()
        resp = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Crawler-Content-Encoding: gzip\r\n"
                f"X-Crawler-Transfer-Encoding: chunked\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        out.append(_raw_record("1.0", [("WARC-Type", "response"), ("WARC-Target-URI", url),
                                       ("WARC-Identified-Payload-Type", "text/html"),
                                       ("Content-Type", "application/http; msgtype=response")], resp))
    path.write_bytes(b"".join(out))


def test_three_writers_yield_the_independent_count(tmp_path):
    docs = pages()
    want = independent_count(docs)
    assert len(want) == 6 * 4
    files = {"wget": tmp_path / "wget.warc.gz", "warcio": tmp_path / "warcio.warc.gz", "cc": tmp_path / "cc.warc.gz"}
    write_wget_style(files["wget"], docs)
    write_warcio_style(files["warcio"], docs)
    write_commoncrawl_style(files["cc"], docs)
    for name, path in files.items():
        spec = BuildSpec(name=f"w-{name}", output_dir=str(tmp_path / f"build-{name}"),
                         crawl={"warc": [str(path)], "languages": ["any"], "min_text_chars": 1, "workers": 1},
                         vocabulary={"wordnet": {"enabled": False}})
        ctx = make_context(spec, log=lambda *_: None)
        stats, _ = build_stages.run_stage(ctx, "candidates")
        got = set()
        for f in (ctx.out / "candidates").glob("*.parquet"):
            t = pq.read_table(f)
            got |= set(zip(t["url"].to_pylist(), t["text"].to_pylist()))
        assert got == want, (name, sorted(want - got)[:3], sorted(got - want)[:3])
        assert stats.counts["records_parsed"] == len(docs), name
