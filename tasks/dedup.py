"""Cross-file dedup of candidate pairs by uid, in bounded memory (the match stage's first step).

A pair (image URL, alt text) found in several WARC files (crawls repeat pages) is kept once:
by the first file that holds it, in the stage's file order, and within a file by its first row.
Holding every uid in one set does not scale (1.6B candidates x ~90 bytes), so the dedup is a
hash-partitioned sort in two parallel phases:

1. `bucket_keys`, per candidates file: (uid, file, row) ordered by `crc32(uid) % buckets`,
   one parquet row group per bucket (`keys/NNNNN.parquet`).
2. `bucket_losers`, per bucket: that bucket's keys from every file (row-group statistics skip
   the rest), sorted by (uid, file, row); every key equal to the one before it is a loser
   (`losers/BBBBB.parquet`: file, row, sorted by file).
3. `split_losers`, per range of 256 files: their losers from every bucket, regrouped as one
   `by_file/NNNNN.npy` per file (so the number of file opens is buckets x ranges, not buckets x files).

The match job of file i then reads `by_file/i.npy` and drops those rows. Memory per worker:
one file's uids (phase 1), one bucket's keys (phase 2; `rows_per_bucket` picks the bucket count),
the losers of 256 files (phase 3).
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

ROWS_PER_BUCKET = 2_000_000  # ~150 MB of keys to sort in one phase-2 worker


def n_buckets(files: list[Path], rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return max(1, math.ceil(rows / rows_per_bucket))


def bucket_keys(in_path: str, file_index: int, buckets: int, out_path: str) -> dict[str, int]:
    """Phase 1 for one candidates file; returns its candidates per language (`lang` column)."""
    t = pq.read_table(in_path, columns=[c for c in ("uid", "lang") if c in pq.read_schema(in_path).names])
    uids = t["uid"].to_pylist()
    bucket = np.fromiter((zlib.crc32(u.encode()) % buckets for u in uids), np.int32, len(uids))
    order = np.argsort(bucket, kind="stable")
    keys = pa.table({"uid": t["uid"].take(pa.array(order)),
                     "file": pa.array(np.full(len(uids), file_index, np.int32)),
                     "row": pa.array(order.astype(np.int64)),
                     "bucket": pa.array(bucket[order])})
    sorted_buckets = bucket[order]
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out_path, keys.schema) as w:
        edges = np.searchsorted(sorted_buckets, np.arange(buckets + 1))
        for b in range(buckets):
            if edges[b + 1] > edges[b]:
                w.write_table(keys.slice(edges[b], edges[b + 1] - edges[b]))
    langs = Counter(t["lang"].to_pylist()) if "lang" in t.column_names else Counter()
    return dict(langs)


def bucket_losers(key_files: list[str], bucket: int, out_path: str) -> int:
    """Phase 2 for one bucket; returns how many duplicates it found."""
    parts = [pq.read_table(f, columns=["uid", "file", "row"], filters=[("bucket", "=", bucket)]) for f in key_files]
    t = pa.concat_tables(parts) if parts else pa.table({"uid": pa.array([], pa.string())})
    if t.num_rows:
        t = t.sort_by([("uid", "ascending"), ("file", "ascending"), ("row", "ascending")])
        uid = t["uid"]
        same = pc.equal(uid.slice(1), uid.slice(0, t.num_rows - 1)).to_numpy(zero_copy_only=False)
        losers = t.slice(1).filter(pa.array(same)).select(["file", "row"]).sort_by([("file", "ascending"), ("row", "ascending")])
    else:
        losers = pa.table({"file": pa.array([], pa.int32()), "row": pa.array([], pa.int64())})
    pq.write_table(losers, out_path, row_group_size=65_536)
    return losers.num_rows


def split_losers(losers_dir: str, first: int, last: int, out_dir: str) -> int:
    """Phase 3 for files [first, last): their losers from every bucket, one `NNNNN.npy` of rows per
    file, so a match job opens one small file instead of every bucket's."""
    parts = [pq.read_table(f, filters=[("file", ">=", first), ("file", "<", last)])
             for f in sorted(Path(losers_dir).glob("*.parquet"))]
    t = pa.concat_tables(parts) if parts else pa.table({"file": pa.array([], pa.int32()), "row": pa.array([], pa.int64())})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not t.num_rows:
        return 0
    t = t.sort_by([("file", "ascending"), ("row", "ascending")])
    files, rows = t["file"].to_numpy(), t["row"].to_numpy()
    starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
    for a, b in zip(starts, [*starts[1:], len(files)]):
        np.save(Path(out_dir) / f"{files[a]:05d}.npy", rows[a:b])
    return len(starts)


FILES_PER_SPLIT = 256


def losers_of(by_file_dir: Path, file_index: int) -> np.ndarray:
    """Rows of candidates file `file_index` that an earlier file (or row) already holds."""
    f = by_file_dir / f"{file_index:05d}.npy"
    return np.load(f) if f.exists() else np.array([], np.int64)
