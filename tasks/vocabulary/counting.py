"""Unigram and bigram counting in bounded memory: count in a dict, spill hash partitions to disk.

Full English Wikipedia has several billion tokens and hundreds of millions of distinct bigrams,
more than fits in a Python dict. A `SpillCounter` holds at most `spill_items` distinct keys;
past that it writes its counts as `partitions` parquet files (by a stable hash of the key) and
starts again. `merge_partition` later sums one partition across every spill of every dump part,
so peak memory is about

    workers x spill_items x ~120 bytes      (counting)
  + distinct keys of one partition x ~2 x ~150 bytes   (merging, spills folded in as they are
                                                       read; shrink with more partitions)

`spec.vocabulary.wikipedia.spill_items` and `.partitions` move the bound.
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.vocabulary.text_rules import NO_SPACE_LANGUAGES, is_word, spaced, tokens


def zh_tokens(text: str, case_sensitive: bool = True) -> list[str]:
    """Words of Chinese text: each space-separated piece of the spaced text (punctuation marks are
    pieces of their own, so no bigram spans them) segmented by rjieba (jieba's dictionary and HMM
    in Rust: 20x jieba's speed with 98% of its cuts, bench/segment_zh.py)."""
    import rjieba

    out: list[str] = []
    for piece in spaced(text, case_sensitive, "zh").split():
        out += [t for t in rjieba.cut(piece) if t.strip()] if len(piece) > 1 else [piece]
    return out


def text_tokens(text: str, case_sensitive: bool = True, language: str = "en") -> list[str]:
    return zh_tokens(text, case_sensitive) if language in NO_SPACE_LANGUAGES else tokens(text, case_sensitive)


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def spill_counts(counter: Counter[str], folder: Path, kind: str, partitions: int, n: int) -> None:
    """Write `counter` as `folder/<kind><p>/spill-<n>.parquet`, one file per hash partition p."""
    if not counter:
        return
    keys = list(counter.keys())
    parts = [partition_of(k, partitions) for k in keys]
    table = pa.table({"key": keys, "count": pa.array(list(counter.values()), pa.int64()), "p": pa.array(parts, pa.int32())})
    for p in range(partitions):
        sub = table.filter(pc.equal(table["p"], p)).drop(["p"])
        if sub.num_rows:
            d = folder / f"{kind}{p:03d}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(sub, d / f"spill-{n:05d}.parquet")


class SpillCounter:
    """Counts unigrams and adjacent-word bigrams of texts; spills to `folder` when full."""

    def __init__(self, folder: Path, partitions: int, spill_items: int, case_sensitive: bool = True, language: str = "en"):
        self.folder, self.partitions, self.spill_items = folder, partitions, spill_items
        self.case_sensitive, self.language = case_sensitive, language
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[str] = Counter()
        self.n_spills = 0
        self.total_tokens = 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def add_text(self, text: str) -> None:
        toks = text_tokens(text, self.case_sensitive, self.language)
        words = [t if is_word(t) else None for t in toks]
        self.unigrams.update(t for t in words if t is not None)
        self.total_tokens += len(toks)
        self.bigrams.update(f"{a} {b}" for a, b in itertools.pairwise(words) if a is not None and b is not None)
        if len(self.unigrams) + len(self.bigrams) >= self.spill_items:
            self.spill()

    def spill(self) -> None:
        for kind, counter in (("u", self.unigrams), ("b", self.bigrams)):
            spill_counts(counter, self.folder, kind, self.partitions, self.n_spills)
        self.unigrams.clear()
        self.bigrams.clear()
        self.n_spills += 1


def merge_partition(part_folders: list[Path], kind: str, p: int, min_count: int) -> pa.Table:
    """Sum counts of partition `p` of `kind` ("u" or "b") over all spills; keep count >= min_count."""
    summed = pa.table({"key": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
    pending: list[pa.Table] = []
    pending_rows = 0
    for f in (f for d in part_folders for f in sorted((d / f"{kind}{p:03d}").glob("*.parquet"))):
        pending.append(pq.read_table(f))
        pending_rows += pending[-1].num_rows
        # fold the spills in as they come, once they outweigh what is summed so far: memory is the
        # partition's distinct keys plus about as many spilled rows, not every spill of every part
        if pending_rows >= max(summed.num_rows, MERGE_BATCH_ROWS):
            summed, pending, pending_rows = _sum_counts([summed, *pending]), [], 0
    if pending:
        summed = _sum_counts([summed, *pending])
    return summed.filter(pc.greater_equal(summed["count"], min_count))


MERGE_BATCH_ROWS = 2_000_000


def _sum_counts(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables).group_by("key").aggregate([("count", "sum")]).rename_columns(["key", "count"])
