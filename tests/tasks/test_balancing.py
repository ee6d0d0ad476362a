import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.curate.balancing import balance_shards, balance_table, keep_probabilities


def _matched(n, entries_of, offset=0):
    return pa.table({"uid": [f"{i + offset:040x}" for i in range(n)],
                     "entry_ids": pa.array([entries_of(i) for i in range(n)], pa.list_(pa.int64()))})


def test_head_entry_is_capped_within_binomial_bounds_and_tail_kept_whole():
    t = 100
    # entry 0: 10,000 matches; entry 1: 50 matches (tail)
    table = pa.concat_tables([_matched(10_000, lambda i: [0]), _matched(50, lambda i: [1], offset=10_000)])
    p = keep_probabilities(np.array([10_000, 50]), t)
    out, _, _ = balance_table(table, p, seed=0)
    ids = out["entry_ids"].to_pylist()
    kept_head = sum(1 for e in ids if e == [0])
    sd = np.sqrt(10_000 * 0.01 * 0.99)
    assert abs(kept_head - 100) < 4 * sd
    assert sum(1 for e in ids if e == [1]) == 50


def test_multi_match_pair_follows_one_minus_product():
    n = 20_000
    table = _matched(n, lambda i: [0, 1])
    p = np.array([0.2, 0.5])
    out, p_keep, _ = balance_table(table, p, seed=1)
    expected = 1 - (1 - 0.2) * (1 - 0.5)
    assert np.allclose(p_keep, expected)
    assert abs(out.num_rows / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_same_result_whatever_the_sharding(tmp_path):
    table = _matched(3000, lambda i: [i % 3, 3] if i % 2 else [i % 3])
    counts = pa.table({"entry_id": [0, 1, 2, 3], "count": [1000, 1000, 1000, 1500]})
    pq.write_table(counts, tmp_path / "counts.parquet")
    results = []
    for shards in (1, 7):
        d = tmp_path / f"m{shards}"
        d.mkdir()
        files = []
        for k, chunk in enumerate(np.array_split(np.arange(3000), shards)):
            f = d / f"{k:05d}.parquet"
            pq.write_table(table.take(pa.array(chunk)), f)
            files.append(f)
        balance_shards(files, tmp_path / "counts.parquet", tmp_path / f"b{shards}", t=200, seed=7)
        results.append(sorted(u for f in sorted((tmp_path / f"b{shards}").glob("0*.parquet")) for u in pq.read_table(f)["uid"].to_pylist()))
    assert results[0] == results[1] and 0 < len(results[0]) < 3000


def test_data_card_bands_do_not_overlap_and_sum_to_all_entries():
    import numpy as np

    from tasks.curate.balance_report import count_bands

    counts = np.array([0, 0, 1, 5, 9, 10, 19, 20, 50, 99, 100, 499, 500, 20000])
    for t, want in ((20, {"0": 2, "1-9": 3, "10-19": 2, ">=20": 7}),
                    (500, {"0": 2, "1-9": 3, "10-99": 5, "100-499": 2, ">=500": 2}),
                    (10, {"0": 2, "1-9": 3, ">=10": 9})):
        bands = count_bands(counts, t)
        assert bands == want, t
        assert sum(bands.values()) == len(counts)


def _shard(tmp_path, table, shards, name):
    d = tmp_path / name
    d.mkdir()
    files = []
    for k, chunk in enumerate(np.array_split(np.arange(table.num_rows), shards)):
        files.append(d / f"{k:05d}.parquet")
        pq.write_table(table.take(pa.array(chunk)), files[-1])
    return files


def test_unbalanced_baseline_has_exactly_n_rows_and_ignores_the_sharding(tmp_path):
    """The "no balancing" baseline is a uniform sample of exactly the balanced set's size, and
    the same pairs however the matched pool is sharded (it is chosen by rank hash, streaming)."""
    from tasks.curate.balancing import in_unbalanced, unbalanced_sample

    table = _matched(5000, lambda i: [i % 5])
    chosen = []
    for shards in (1, 7):
        files = _shard(tmp_path, table, shards, f"m{shards}")
        out = tmp_path / f"unbalanced{shards}.json"
        assert unbalanced_sample(files, 1234, seed=3, out_path=out, workers=2 if shards > 1 else 1) == 1234
        baseline = json.loads(out.read_text())
        chosen.append({u for f in files for u, keep in zip(pq.read_table(f)["uid"].to_pylist(),
                                                            in_unbalanced(pq.read_table(f)["uid"].to_pylist(), baseline)) if keep})
    assert len(chosen[0]) == 1234 and chosen[0] == chosen[1]
    # uniform: each entry holds about a fifth of the sample
    per_entry = np.bincount([int(u, 16) % 5 for u in chosen[0]], minlength=5)
    assert np.all(np.abs(per_entry - 1234 / 5) < 4 * np.sqrt(1234 * 0.2 * 0.8))


def test_balancing_in_parallel_workers_keeps_the_same_pairs(tmp_path):
    table = _matched(3000, lambda i: [i % 3, 3] if i % 2 else [i % 3])
    pq.write_table(pa.table({"entry_id": [0, 1, 2, 3], "count": [1000, 1000, 1000, 1500]}), tmp_path / "counts.parquet")
    files = _shard(tmp_path, table, 5, "m")
    kept = []
    for workers in (1, 2):
        out = tmp_path / f"b{workers}"
        balance_shards(files, tmp_path / "counts.parquet", out, t=200, seed=7, workers=workers)
        kept.append([pq.read_table(f)["uid"].to_pylist() for f in sorted(out.glob("0*.parquet"))])
    assert kept[0] == kept[1] and 0 < sum(map(len, kept[0])) < 3000


def test_data_card_head_share_falls_in_draws_while_a_ride_along_word_keeps_it_in_matches(tmp_path):
    """A Zipf pool where every caption also names one stopword-like entry ("of"): the draws that
    kept pairs give each head entry about t (so the head's share of draws falls to about half),
    while the stopword rides along with every kept pair (so its matches stay far above t)."""
    from tasks.curate.balance_report import balance_report

    t, n_concepts = 20, 60
    per = [max(1, round(3000 / (k + 1) ** 1.5)) for k in range(n_concepts)]  # entries 1..60, entry 0 = "of"
    rows = [[0, 1 + k] for k, n in enumerate(per) for _ in range(n)]
    table = pa.table({"uid": [f"{i:040x}" for i in range(len(rows))], "entry_ids": pa.array(rows, pa.list_(pa.int64()))})
    pq.write_table(table, tmp_path / "m.parquet")
    counts = np.array([len(rows), *per])
    pq.write_table(pa.table({"entry_id": np.arange(len(counts)), "query": ["of"] + [f"c{k}" for k in range(n_concepts)],
                             "count": counts}), tmp_path / "counts.parquet")
    balance_shards([tmp_path / "m.parquet"], tmp_path / "counts.parquet", tmp_path / "bal", t=t, seed=0)
    after = pq.read_table(tmp_path / "bal" / "entry_counts_after.parquet").to_pandas()
    head = counts >= t
    for e in np.nonzero(head)[0]:  # each head entry's own draws: Binomial(count, t / count)
        assert abs(after["drawn"][e] - t) < 4 * np.sqrt(t), (e, after["drawn"][e])
    assert (after["drawn"][~head] == counts[~head]).all()  # the tail draws every one of its pairs
    from tasks.curate.balancing import BalanceStats

    r = balance_report(tmp_path / "counts.parquet", tmp_path / "bal", t, BalanceStats())
    want_drawn = (t * head.sum()) / (t * head.sum() + counts[~head].sum())
    assert abs(r.head_share_drawn - want_drawn) < 0.05
    assert r.head_share_before - r.head_share_drawn > 0.2
    # "of" is in every kept pair: the balanced set's matches keep the head above half
    assert after["count_after"][0] == after["count_after"][1:].sum() and r.head_share_after > 0.5
    assert (tmp_path / "bal" / "balance.png").stat().st_size > 0


def test_each_seed_and_entry_draws_its_own_stream():
    """Seed 1's entry 5 must not replay seed 0's entry 6 (a seed + entry key did); seed 0 is unchanged."""
    from tasks.curate.balancing import _splitmix, uid_u64, uniform_draws

    uids = np.array([f"{i:040x}" for i in range(2000)], dtype=object)
    e = lambda k: np.full(len(uids), k, dtype=np.int64)
    assert not np.array_equal(uniform_draws(1, uids, e(5)), uniform_draws(0, uids, e(6)))
    assert not np.array_equal(uniform_draws(1, uids, e(5)), uniform_draws(2, uids, e(5)))
    with np.errstate(over="ignore"):  # seed 0: the streams every committed build was balanced with
        old = (_splitmix(uid_u64(uids) ^ _splitmix(e(6).astype(np.uint64))) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    assert np.array_equal(uniform_draws(0, uids, e(6)), old)
