"""The match stage's cross-file pass (tasks/curate/dedup.py) keeps exactly what one set of seen
uids would keep, in any bucket count, and drops every pair of a URL under too many captions."""

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.crawl.filters import uid_of
from tasks.curate.dedup import (
    DEDUP_REASONS,
    bucket_keys,
    bucket_losers,
    losers_of,
    n_buckets,
    split_losers,
    worst_urls,
)


def _reference(files, max_captions=None):
    """(file, row) -> reason, by one pass over every row with a set of seen uids."""
    rows = [(i, r, u, url) for i, f in enumerate(files) for r, (u, url) in
            enumerate(zip(*pq.read_table(f, columns=["uid", "url"]).to_pydict().values()))]
    captions = defaultdict(set)
    for *_, u, url in rows:
        captions[url].add(u)
    seen, out = set(), {}
    for i, r, u, url in rows:
        if max_captions and len(captions[url]) > max_captions:
            out[(i, r)] = "url_many_captions"
        elif u in seen:
            out[(i, r)] = "duplicate_across_files"
        seen.add(u)
    return out


def _files(tmp_path, rng):
    files = []
    for i in range(4):  # pairs drawn from a small pool: repeats within and across files
        urls = [f"http://img.example/{x}.jpg" for x in rng.integers(0, 150, 300)]
        texts = [f"caption {x}" for x in rng.integers(0, 4, 300)]
        urls[:20] = ["http://img.example/placeholder.gif"] * 20  # one URL under 20 different captions
        texts[:20] = [f"story {i}-{k}" for k in range(20)]
        files.append(tmp_path / f"w{i:05d}.parquet")
        pq.write_table(pa.table({"uid": [uid_of(u, t) for u, t in zip(urls, texts)], "url": urls, "text": texts,
                                 "lang": ["en"] * 300}), files[-1])
    return files


def _run(tmp_path, files, buckets, max_captions):
    keys = [str(tmp_path / "keys" / f.name) for f in files]
    langs = [bucket_keys(str(f), i, buckets, k) for i, (f, k) in enumerate(zip(files, keys))]
    assert sum(d["en"] for d in langs) == 1200
    (tmp_path / "losers").mkdir()
    worst = [bucket_losers(keys, b, str(tmp_path / "losers" / f"{b:05d}.parquet"), max_captions) for b in range(buckets)]
    for first in range(0, 4, 3):  # files regrouped in ranges of 3 (the stage uses 256)
        split_losers(str(tmp_path / "losers"), first, min(first + 3, 4), str(tmp_path / "by_file"))
    ours = {}
    for i in range(4):
        rows, reasons = losers_of(tmp_path / "by_file", i)
        ours.update({(i, int(r)): DEDUP_REASONS[int(c)] for r, c in zip(rows, reasons)})
    if buckets > 1:  # one row group per (non-empty) bucket: a phase-2 worker reads only its bucket
        pf = pq.ParquetFile(keys[0])
        assert pf.metadata.num_row_groups == len(set(pf.read(columns=["bucket"])["bucket"].to_pylist())) > 1
    return ours, worst_urls(worst)


@pytest.mark.parametrize("buckets", [1, 3, 16])
def test_first_file_and_first_row_keep_a_pair(tmp_path, buckets):
    files = _files(tmp_path, np.random.default_rng(0))
    ours, worst = _run(tmp_path, files, buckets, max_captions=None)
    assert ours == _reference(files) and set(ours.values()) == {"duplicate_across_files"} and worst == []


@pytest.mark.parametrize("buckets", [1, 5])
def test_a_url_under_too_many_captions_loses_every_pair(tmp_path, buckets):
    files = _files(tmp_path, np.random.default_rng(1))
    ours, worst = _run(tmp_path, files, buckets, max_captions=10)
    ref = _reference(files, max_captions=10)
    assert ours == ref
    many = [k for k, v in ours.items() if v == "url_many_captions"]
    assert len(many) >= 80  # the placeholder's 4 x 20 pairs, and any pool URL over 10 captions
    assert worst[0] == ("http://img.example/placeholder.gif", 80)


def test_bucket_count_follows_the_rows(tmp_path):
    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"uid": [f"{i:040x}" for i in range(1000)]}), f)
    assert n_buckets([f], rows_per_bucket=300) == 4 and n_buckets([f]) == 1
