"""The match stage's cross-file pass, in bounded memory: duplicate pairs and over-captioned URLs.

A pair (image URL, alt text) found in several WARC files (crawls repeat pages) is kept once:
by the first file that holds it, in the stage's file order, and within a file by its first row.
An image URL that carries more than `crawl.max_captions_per_url` distinct captions across the
crawl (a lazy-load placeholder, a logo, a spacer: one blank image under a hundred captions) is
dropped with all its pairs, as `url_many_captions`. Holding every key in one set does not scale
(1.6B candidates x ~90 bytes), so the pass is a hash-partitioned sort in parallel phases, the
partition being the URL (so both rules see all of a URL's pairs in one bucket):

1. `bucket_keys`, per candidates file: (url, uid, file, row) ordered by `crc32(url) % buckets`,
   one parquet row group per bucket (`keys/NNNNN.parquet`).
2. `bucket_losers`, per bucket: that bucket's keys from every file (row-group statistics skip
   the rest), sorted by (url, uid, file, row); a key whose uid equals the one before it is a
   duplicate, and every key of a URL with too many distinct uids goes too
   (`losers/BBBBB.parquet`: file, row, reason, sorted by file).
3. `split_losers`, per range of 256 files: their losers from every bucket, regrouped as one
   `by_file/NNNNN.npy` per file (so the number of file opens is buckets x ranges, not buckets x files).

The match job of file i then reads `by_file/i.npy` and drops those rows, each for its reason.
Memory per worker: one file's keys (phase 1), one bucket's keys (phase 2; `rows_per_bucket` picks
the bucket count), the losers of 256 files (phase 3).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.engine import atomic

ROWS_PER_BUCKET = 2_000_000  # ~300 MB of keys to sort in one phase-2 worker
DEDUP_REASONS = ("duplicate_across_files", "url_many_captions")  # a loser's reason, by code


def n_buckets(files: list[Path], rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return max(1, math.ceil(rows / rows_per_bucket))


def bucket_keys(in_path: str, file_index: int, buckets: int, out_path: str) -> dict[str, int]:
    """Phase 1 for one candidates file; returns its candidates per language (`lang` column)."""
    t = pq.read_table(in_path, columns=[c for c in ("uid", "url", "lang") if c in pq.read_schema(in_path).names])
    urls = t["url"].to_pylist()
    bucket = np.fromiter((zlib.crc32(u.encode()) % buckets for u in urls), np.int32, len(urls))
    order = np.argsort(bucket, kind="stable")
    keys = pa.table({"url": t["url"].take(pa.array(order)), "uid": t["uid"].take(pa.array(order)),
                     "file": pa.array(np.full(len(urls), file_index, np.int32)),
                     "row": pa.array(order.astype(np.int64)),
                     "bucket": pa.array(bucket[order])})
    sorted_buckets = bucket[order]
    with atomic(Path(out_path)) as tmp, pq.ParquetWriter(tmp, keys.schema) as w:
        edges = np.searchsorted(sorted_buckets, np.arange(buckets + 1))
        for b in range(buckets):
            if edges[b + 1] > edges[b]:
                w.write_table(keys.slice(edges[b], edges[b + 1] - edges[b]))
    langs = Counter(t["lang"].to_pylist()) if "lang" in t.column_names else Counter()
    return dict(langs)


def bucket_losers(key_files: list[str], bucket: int, out_path: str, max_captions_per_url: int | None = None
                  ) -> list[tuple[str, int]]:
    """Phase 2 for one bucket; returns its URLs over the caption limit with their caption counts
    (the worst 20)."""
    parts = [pq.read_table(f, columns=["url", "uid", "file", "row"], filters=[("bucket", "=", bucket)]) for f in key_files]
    empty = pa.table({"file": pa.array([], pa.int32()), "row": pa.array([], pa.int64()), "reason": pa.array([], pa.int8())})
    t = pa.concat_tables(parts) if parts else None
    worst: list[tuple[str, int]] = []
    if t is None or not t.num_rows:
        losers = empty
    else:
        t = t.sort_by([("url", "ascending"), ("uid", "ascending"), ("file", "ascending"), ("row", "ascending")])
        n = t.num_rows
        dup = np.zeros(n, bool)
        dup[1:] = pc.equal(t["uid"].slice(1), t["uid"].slice(0, n - 1)).to_numpy(zero_copy_only=False)
        reason = np.where(dup, 0, -1).astype(np.int8)
        if max_captions_per_url:
            url = t["url"]
            starts = np.flatnonzero(np.r_[True, ~pc.equal(url.slice(1), url.slice(0, n - 1)).to_numpy(zero_copy_only=False)])
            ends = np.r_[starts[1:], n]
            distinct = np.add.reduceat((~dup).astype(np.int64), starts)  # captions (uids) per URL
            for a, b, c in zip(starts, ends, distinct):
                if c > max_captions_per_url and not url[int(a)].as_py().startswith("file://"):  # own images: any number
                    reason[a:b] = 1
                    worst.append((url[int(a)].as_py(), int(c)))
        sel = np.flatnonzero(reason >= 0)
        losers = pa.table({"file": t["file"].take(pa.array(sel)), "row": t["row"].take(pa.array(sel)),
                           "reason": pa.array(reason[sel], pa.int8())}).sort_by([("file", "ascending"), ("row", "ascending")])
    with atomic(Path(out_path)) as tmp:
        pq.write_table(losers, tmp, row_group_size=65_536)
    return sorted(worst, key=lambda x: -x[1])[:20]


def worst_urls(per_bucket: list[list[tuple[str, int]]], n: int = 5) -> list[tuple[str, int]]:
    """The URLs with the most distinct captions among those dropped, over all buckets."""
    return sorted((u for b in per_bucket for u in b), key=lambda x: -x[1])[:n]


def split_losers(losers_dir: str, first: int, last: int, out_dir: str) -> int:
    """Phase 3 for files [first, last): their losers from every bucket, one `NNNNN.npy` of rows per
    file, so a match job opens one small file instead of every bucket's."""
    parts = [pq.read_table(f, filters=[("file", ">=", first), ("file", "<", last)])
             for f in sorted(Path(losers_dir).glob("*.parquet"))]
    t = pa.concat_tables(parts) if parts else None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if t is None or not t.num_rows:
        return 0
    t = t.sort_by([("file", "ascending"), ("row", "ascending")])
    files, rows, reasons = t["file"].to_numpy(), t["row"].to_numpy(), t["reason"].to_numpy()
    starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
    for a, b in zip(starts, [*starts[1:], len(files)]):
        with atomic(Path(out_dir) / f"{files[a]:05d}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.stack([rows[a:b], reasons[a:b].astype(np.int64)]))
    return len(starts)


FILES_PER_SPLIT = 256


def losers_of(by_file_dir: Path, file_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, reason codes) of candidates file `file_index` that the pass drops: pairs an earlier
    file (or row) already holds, and pairs of URLs with too many captions (DEDUP_REASONS)."""
    f = by_file_dir / f"{file_index:05d}.npy"
    if not f.exists():
        return np.array([], np.int64), np.array([], np.int64)
    rows, reasons = np.load(f)
    return rows, reasons
