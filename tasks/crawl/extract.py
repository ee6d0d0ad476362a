"""Stage 2 of build-wit: candidate (image URL, alt text) pairs from crawls and tables.

    warc.py     WARC / WAT files -> pairs      tables.py   LAION / CC3M tables -> pairs
    local.py    your own images + captions     (a folder, a table of paths, Chinese-CLIP's layout)
    filters.py  one pair: normalise, check     langid.py   the language of an alt text

`extract_file` turns one input into one candidates parquet (deduplicated within the file),
written atomically and then marked done, so a rerun skips it. Output rows: uid, url, text,
page_url, lang, source, record. With `crawl.keep_dropped`, dropped pairs are written too
(`candidates/dropped/<input>.parquet`: src, text, page_url, reason, source, record).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.crawl.local import iter_local
from tasks.crawl.tables import iter_table
from tasks.crawl.warc import iter_warc
from tasks.engine import Stats, atomic, mark_unit
from tasks.specs import CrawlSpec, LocalSpec, TableSpec
from tasks.vocabulary.wikitext import open_source

CANDIDATE_SCHEMA = pa.schema([
    ("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), ("page_url", pa.string()),
    ("lang", pa.string()), ("source", pa.string()), ("record", pa.int64()),
])


def extract_file(kind: str, source: str | TableSpec | LocalSpec, spec: CrawlSpec, out_path: Path) -> Stats:
    """One input -> one candidates parquet (deduped within the file), written atomically, then
    the unit marker with its stats (so a rerun skips it). `kind`: warc, table or local."""
    stats = Stats()
    dropped: list | None = [] if spec.keep_dropped else None
    if kind == "warc":
        rows = iter_warc(source, spec, stats, dropped)
    elif kind == "table":
        rows = iter_table(source, spec, stats, dropped)
    else:  # a local source's images from a Chinese-CLIP TSV are written beside its parquet
        rows = iter_local(source, spec, stats, out_path.parent / out_path.stem, dropped)
    seen: set[str] = set()
    cols: dict[str, list] = {k: [] for k in CANDIDATE_SCHEMA.names}
    for row in rows:
        if row["uid"] in seen:
            stats.drop("duplicate")
            continue
        seen.add(row["uid"])
        for k, column in cols.items():
            column.append(row[k])
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
