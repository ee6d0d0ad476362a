"""Candidates from WARC (HTML responses) and WAT (JSON metadata) files.

FastWARC reads the records (WARC/1.0 and 1.1, per-record gzip, truncated members), Resiliparse
parses the HTML. Every `<img>` with text in one of `crawl.attributes` becomes a candidate;
relative URLs are resolved against the page URL and its `<base href>`. A broken record is counted
and skipped, never fatal.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from urllib.parse import urljoin

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree
from resiliparse.parse.http import iterate_http_chunks

from tasks.crawl.filters import PairFilter, uid_of
from tasks.engine import Stats
from tasks.specs import CrawlSpec

# Lazy-loading pages put a placeholder in `src` (a 1x1 data: GIF, "blank.gif", "lazy_placeholder.png")
# and the real image in one of these, which a script swaps in; a crawler reads them itself
LAZY_ATTRS = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-url", "data-hi-res-src", "original")
SRCSET_ATTRS = ("data-srcset", "srcset", "data-lazy-srcset")
_PLACEHOLDER = re.compile(r"(^|[/_-])(blank|empty|spacer|pixel|placeholder|transparent|lazy|loading|loader|dummy|1x1|spinner)"
                          r"([._-][0-9a-f]{4,16})?\.(gif|png|jpe?g|svg|webp)(\?.*)?$", re.IGNORECASE)


def is_placeholder(src: str) -> bool:
    """A `src` that is not the picture: missing, an inline data: URI, or a placeholder file name."""
    s = src.strip()
    return not s or s[:5].lower() == "data:" or bool(_PLACEHOLDER.search(s.split("#", 1)[0]))


def best_srcset(srcset: str) -> str | None:
    """The largest candidate of a srcset ("a.jpg 320w, b.jpg 640w" -> b.jpg; "x.jpg 1x, y.jpg 2x" -> y.jpg),
    parsed as the HTML standard does: a URL may contain commas ("c_fill,w_320/x.jpg 320w")."""
    best, best_size, i, n = None, -1.0, 0, len(srcset)
    while i < n:
        while i < n and (srcset[i].isspace() or srcset[i] == ","):
            i += 1
        j = i
        while j < n and not srcset[j].isspace():
            j += 1
        url = srcset[i:j]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            k = srcset.find(",", j)
            k = n if k < 0 else k
            descriptor, j = srcset[j:k].strip(), k + 1
        i = j
        if not url:
            continue
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([wx])", descriptor.split()[0]) if descriptor else None
        size = float(m.group(1)) * (1 if m and m.group(2) == "w" else 1000) if m else 1.0  # a w beats an x
        if size > best_size:
            best, best_size = url, size
    return best


def image_source(img) -> tuple[str, str]:
    """(the image's URL, the attribute it came from): `src`, or where `src` is a placeholder, the
    first lazy-loading attribute that holds a URL, else the largest srcset candidate."""
    src = img.getattr("src", "") or ""
    if not is_placeholder(src):
        return src, "src"
    for a in LAZY_ATTRS:
        v = (img.getattr(a, "") or "").strip()
        if v and not is_placeholder(v):
            return v, a
    for a in SRCSET_ATTRS:
        v = best_srcset(img.getattr(a, "") or "")
        if v and not is_placeholder(v):
            return v, a
    return src, "src"


def _img_pairs_from_html(body: bytes, page_url: str, attrs: list[str]) -> Iterator[tuple[str, str, str, str]]:
    """(src, text, base, src attribute) for each <img> attribute with text; base honours <base href>."""
    tree = HTMLTree.parse_from_bytes(body, detect_encoding(body))
    base = page_url
    if tree.head is not None:
        b = tree.head.query_selector("base[href]")
        if b is not None:
            base = urljoin(page_url, b.getattr("href", ""))
    root = tree.body if tree.body is not None else tree.document
    for img in root.query_selector_all("img"):
        src, src_attr = image_source(img)
        texts = [(img.getattr(a, "") or "") for a in attrs]
        texts = [t for t in texts if t.strip()]
        if not texts:
            yield src, "", base, src_attr
        for t in dict.fromkeys(texts):  # alt and title often repeat each other
            yield src, t, base, src_attr


def target_uri(headers) -> str | None:
    """The record's WARC-Target-URI in either grammar: WARC/1.1 and Common Crawl write the bare
    URI, WARC/1.0's grammar (wget, Heritrix, some warcio versions) wraps it in `<...>`."""
    uri = (headers.get("WARC-Target-URI") or "").strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri or None


MAX_BODY_BYTES = 64 << 20  # a page that inflates beyond this is a bomb, not a page


def http_body(rec) -> bytes:
    """The entity body as a browser sees it. wget and warcio keep the bytes as sent (chunked
    transfer coding, gzip/deflate/br content coding); Common Crawl stores them decoded and
    renames the headers to X-Crawler-*, so those bodies pass through unchanged."""
    headers = rec.http_headers
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        body = b"".join(iterate_http_chunks(rec.reader))
    else:
        body = rec.reader.read()
    coding = (headers.get("Content-Encoding") or "").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        try:
            body = d.decompress(body, MAX_BODY_BYTES)
        except zlib.error:  # raw deflate without a zlib header (old servers)
            body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, MAX_BODY_BYTES)
    elif coding == "br":
        import brotli

        body = brotli.decompress(body)[:MAX_BODY_BYTES]
    return body


def iter_warc(path: str, spec: CrawlSpec, stats: Stats, dropped: list | None = None) -> Iterator[dict]:
    """Candidates from a WARC (HTML responses) or WAT (JSON metadata) file."""
    filt = PairFilter(spec, stats)
    # FastWARC undoes the per-record gzip itself, and stops cleanly at a truncated member.
    with fsspec.open(path, "rb").open() as fh:
        records = ArchiveIterator(fh, parse_http=True,
                                  record_types=WarcRecordType.response | WarcRecordType.metadata)
        n = -1
        try:
            for n, rec in enumerate(records):
                page_url = target_uri(rec.headers)
                if not page_url:
                    stats.drop("record_no_target_uri")
                    continue
                try:
                    if rec.record_type == WarcRecordType.metadata:
                        if "json" not in (rec.headers.get("Content-Type") or ""):
                            stats.drop("record_not_wat_json")
                            continue
                        pairs = list(_pairs_from_wat(rec.reader.read(), page_url))
                    else:
                        if rec.http_headers is None or rec.http_headers.status_code is None:
                            stats.drop("record_bad_http")
                            continue
                        ctype = (rec.http_content_type or "").lower()
                        if "html" not in ctype:
                            stats.drop("record_not_html")
                            continue
                        pairs = list(_img_pairs_from_html(http_body(rec), page_url, spec.attributes))
                except Exception as e:  # noqa: BLE001 - a broken record must not end the file
                    stats.drop("record_error")
                    stats.counts[f"record_error_{type(e).__name__}"] += 1
                    continue
                stats.counts["records_parsed"] += 1
                for src, text, base, src_attr in pairs:
                    stats.counts["img_tags"] += 1
                    stats.rows_in += 1
                    row, reason = filt(src, text, base, src_attr)
                    if row is None:
                        stats.drop(reason)
                        if dropped is not None:
                            dropped.append({"src": src, "text": text, "page_url": page_url, "reason": reason, "source": path, "record": n})
                        continue
                    row.update(uid=uid_of(row["url"], row["text"]), page_url=page_url, source=path, record=n)
                    yield row
        except Exception as e:  # noqa: BLE001 - a truncated file: keep what was read
            stats.drop("file_truncated")
            stats.counts[f"file_truncated_{type(e).__name__}"] += 1


def _pairs_from_wat(payload: bytes, page_url: str) -> Iterator[tuple[str, str, str]]:
    meta = json.loads(payload)
    html_meta = meta.get("Envelope", {}).get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {}).get("HTML-Metadata", {})
    base = urljoin(page_url, html_meta.get("Head", {}).get("Base") or page_url)
    for link in html_meta.get("Links", []):
        if link.get("path") == "IMG@/src":
            yield link.get("url", ""), link.get("alt") or link.get("title") or "", base, "src"
