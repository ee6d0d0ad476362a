"""Cross-file dedup (tasks/dedup.py) keeps exactly what one set of seen uids would keep, in any bucket count."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.dedup import bucket_keys, bucket_losers, losers_of, n_buckets, split_losers


def _reference(files):
    seen, losers = set(), []
    for i, f in enumerate(files):
        for r, u in enumerate(pq.read_table(f)["uid"].to_pylist()):
            if u in seen:
                losers.append((i, r))
            seen.add(u)
    return sorted(losers)


@pytest.mark.parametrize("buckets", [1, 3, 16])
def test_first_file_and_first_row_keep_a_pair(tmp_path, buckets):
    rng = np.random.default_rng(0)
    files = []
    for i in range(4):  # uids drawn from a small pool: repeats within and across files
        uids = [f"{x:040x}" for x in rng.integers(0, 600, 300)]
        files.append(tmp_path / f"w{i:05d}.parquet")
        pq.write_table(pa.table({"uid": uids, "lang": ["en"] * 300}), files[-1])
    keys = [str(tmp_path / "keys" / f.name) for f in files]
    langs = [bucket_keys(str(f), i, buckets, k) for i, (f, k) in enumerate(zip(files, keys))]
    assert sum(d["en"] for d in langs) == 1200
    (tmp_path / "losers").mkdir()
    found = sum(bucket_losers(keys, b, str(tmp_path / "losers" / f"{b:05d}.parquet")) for b in range(buckets))
    for first in range(0, 4, 3):  # files regrouped in ranges of 3 (the stage uses 256)
        split_losers(str(tmp_path / "losers"), first, min(first + 3, 4), str(tmp_path / "by_file"))
    ours = sorted((i, int(r)) for i in range(4) for r in losers_of(tmp_path / "by_file", i))
    assert ours == _reference(files) and found == len(ours) > 0
    if buckets > 1:  # one row group per bucket: a phase-2 worker reads only its bucket
        assert pq.ParquetFile(keys[0]).metadata.num_row_groups == buckets


def test_bucket_count_follows_the_rows(tmp_path):
    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"uid": [f"{i:040x}" for i in range(1000)]}), f)
    assert n_buckets([f], rows_per_bucket=300) == 4 and n_buckets([f]) == 1
