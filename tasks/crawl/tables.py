"""Candidates from LAION/CC3M-style tables: parquet, CSV, TSV, JSON lines (gz ok)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.crawl.filters import PairFilter, candidate_rows
from tasks.engine import Stats
from tasks.specs import CrawlSpec, SpecError, TableSpec
from tasks.vocabulary.wikitext import open_source


def iter_table(t: TableSpec, spec: CrawlSpec, stats: Stats, dropped: list | None = None) -> Iterator[dict]:
    """Candidates from LAION/CC3M-style tables (parquet, CSV, TSV, JSON lines; gz ok)."""
    table = read_table(t)
    urls, texts = table[t.url_col].to_pylist(), table[t.caption_col].to_pylist()
    pairs = ((str(u) if u is not None else "", str(x) if x is not None else "", None) for u, x in zip(urls, texts))
    yield from candidate_rows(pairs, PairFilter(spec, stats), stats, t.path, dropped)


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
