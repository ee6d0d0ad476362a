"""Stream pages out of MediaWiki XML exports and turn wikitext into plain text.

Inputs are `pages-articles` exports: `.xml`, `.xml.bz2` (multistream files too: Python's bz2
reads concatenated streams), local paths or http(s) URLs (opened with fsspec, streamed).

A multistream dump can also be read in byte ranges: `multistream_ranges` turns its index
(`...-multistream-index.txt.bz2`, lines `offset:page_id:title`) into ranges of whole bz2
streams, and a source `DUMP#bytes=START-END` reads only that range (END empty: to the end of
the file). Each range is a part that counts in parallel with the others and is cached alone.

The cleaner is a regex pass in the tradition of gensim's `filter_wiki` and WikiExtractor,
chosen over a full parser (mwparserfromhell) for throughput at full-Wikipedia scale
(bench/vocabulary.py measures it). It drops comments, references, templates, tables, file /
image / category / interwiki links and HTML tags, and keeps link labels and headings' text.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

from tasks.engine import Stats


@dataclass
class Page:
    title: str
    ns: int
    redirect: bool
    text: str


class DumpError(ValueError):
    pass


RANGE = re.compile(r"^(?P<path>.+)#bytes=(?P<start>\d+)-(?P<end>\d*)$")


def multistream_ranges(index_path: str, streams_per_part: int) -> list[tuple[int, int | None]]:
    """Byte ranges of `streams_per_part` consecutive bz2 streams each, from a multistream index.

    The index lists the offset of the stream holding each page; the header stream (siteinfo)
    before the first listed offset is skipped, and the last range runs to the end of the file."""
    offsets: set[int] = set()
    with fsspec.open(index_path, "rt", compression="infer", encoding="utf-8") as f:
        for line in f:
            off = line.split(":", 1)[0]
            if off.isdigit():
                offsets.add(int(off))
    starts = sorted(offsets)
    groups = [starts[i] for i in range(0, len(starts), max(1, streams_per_part))]
    return [(a, groups[k + 1] if k + 1 < len(groups) else None) for k, a in enumerate(groups)]


class _RangeReader:
    """A file-like view of the XML in a byte range of whole bz2 streams. A range after the
    header stream gets a root element around it so that it parses on its own; one that ends
    before the file's footer gets the root closed."""

    CHUNK = 1 << 20

    def __init__(self, path: str, start: int, end: int | None):
        import bz2

        self._new = bz2.BZ2Decompressor
        self._fh = fsspec.open(path, "rb").open()
        self._fh.seek(start)
        self._left = None if end is None else end - start
        self._dec = self._new()
        self._buf = b"<mediawiki>" if start else b""
        self._pos = 0  # read position in _buf
        self._tail = b""
        self._done = False

    def _more(self) -> None:
        n = self.CHUNK if self._left is None else min(self.CHUNK, self._left)
        raw = self._fh.read(n) if n > 0 else b""
        if self._left is not None:
            self._left -= len(raw)
        if not raw:
            self._done = True
            if not self._tail.rstrip().endswith(b"</mediawiki>"):
                self._buf = self._buf[self._pos:] + b"</mediawiki>"
                self._pos = 0
            return
        out = []
        while raw:
            if self._dec.eof:  # the next bz2 stream
                self._dec = self._new()
            out.append(self._dec.decompress(raw))
            raw = self._dec.unused_data if self._dec.eof else b""
        data = b"".join(out)
        self._tail = (self._tail + data)[-64:]
        self._buf = self._buf[self._pos:] + data  # compact: only the unread rest is copied
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n is None or n < 0 or len(self._buf) - self._pos < n):
            self._more()
        end = len(self._buf) if n is None or n < 0 else self._pos + n
        out = self._buf[self._pos:end]
        self._pos += len(out)
        return out

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_source(path: str):
    """A binary stream over a local path or URL, decompressed by extension (.bz2/.gz/.xz);
    `PATH#bytes=START-END` reads that range of a multistream dump."""
    m = RANGE.match(path)
    if m:
        return _RangeReader(m["path"], int(m["start"]), int(m["end"]) if m["end"] else None)
    return fsspec.open(path, "rb", compression="infer").open()


def iter_pages(path: str) -> Iterator[Page]:
    """Every <page> of an export, in order. Memory stays flat: each element is cleared."""
    with open_source(path) as fh:
        ctx = ET.iterparse(fh, events=("end",))
        title, ns, redirect, text = "", 0, False, ""
        try:
            for _event, elem in ctx:
                tag = elem.tag.rsplit("}", 1)[-1]
                if tag == "title":
                    title = elem.text or ""
                elif tag == "ns":
                    ns = int(elem.text or 0)
                elif tag == "redirect":
                    redirect = True
                elif tag == "text":
                    text = elem.text or ""
                elif tag == "page":
                    yield Page(title, ns, redirect, text)
                    title, ns, redirect, text = "", 0, False, ""
                    elem.clear()
                elif tag in ("revision", "siteinfo"):
                    elem.clear()
        except ET.ParseError as e:
            raise DumpError(f"{path}: malformed XML ({e}); pages before this point were read") from None


_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.DOTALL | re.IGNORECASE)
_DROP_TAGS = re.compile(r"<(math|gallery|timeline|score|syntaxhighlight|code|pre)\b[^>]*>.*?</\1>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXT_LINK = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.MULTILINE)
_QUOTES = re.compile(r"'{2,}")
_LIST = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
_MAGIC = re.compile(r"__[A-Z]+__")
_DROP_NS = ("file:", "image:", "category:", "media:", "wikipedia:", "wp:", "help:", "template:", "portal:", "draft:", "user:", "special:")
_INTERWIKI = re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:")


def _link(m: re.Match) -> str:
    inner = m.group(1)
    low = inner.lstrip(":").lower()
    if low.startswith(_DROP_NS) or _INTERWIKI.match(inner):
        return " "
    return inner.rsplit("|", 1)[-1]


def _until_stable(pattern: re.Pattern, repl, text: str, limit: int = 20) -> str:
    for _ in range(limit):  # innermost first, so nesting unwinds one level per pass
        new = pattern.sub(repl, text)
        if new == text:
            break
        text = new
    return text


def wikitext_to_text(wikitext: str) -> str:
    t = _COMMENT.sub(" ", wikitext)
    t = _REF.sub(" ", t)
    t = _DROP_TAGS.sub(" ", t)
    t = _until_stable(_TEMPLATE, " ", t)
    t = _until_stable(_TABLE, " ", t)
    t = _until_stable(_INNER_LINK, _link, t)
    t = _EXT_LINK.sub(r"\1", t)
    t = _TAG.sub(" ", t)
    t = _HEADING.sub(r"\1.", t)
    t = _QUOTES.sub("", t)
    t = _LIST.sub("", t)
    t = _MAGIC.sub(" ", t)
    return html.unescape(t)


def iter_article_texts(path: str, stats: Stats | None = None) -> Iterator[tuple[str, str]]:
    """(title, plain text) of namespace-0 non-redirect pages; `stats` counts every page read
    (rows_in), the articles and their wikitext bytes (counts), and what was skipped (dropped)."""
    stats = stats if stats is not None else Stats()
    for page in iter_pages(path):
        stats.rows_in += 1
        if page.ns != 0:
            stats.drop("other_namespace")
        elif page.redirect or page.text.lstrip()[:9].upper() == "#REDIRECT":
            stats.drop("redirect_page")
        else:
            stats.counts["articles"] += 1
            stats.counts["wikitext_bytes"] += len(page.text)
            yield page.title, wikitext_to_text(page.text)
