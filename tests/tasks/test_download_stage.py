"""The download stage through the engine: bounded time when no host answers, and the true
unbalanced baseline (a uniform sample of the whole matched pool, the size of the balanced set)."""

import asyncio
import time

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import engine
from tasks.specs import BuildSpec
from tasks.stages import BY_NAME, BuildContext


def _ctx(tmp_path, lookup, t=50, **download) -> BuildContext:
    spec = BuildSpec(name="t", output_dir=str(tmp_path), crawl={"warc": ["unused.warc.gz"]},
                     balancing={"max_pairs_per_query": t}, download=download)
    return BuildContext(spec, tmp_path, log=lambda *_: None, dns_lookup=lookup)


def _matched_pool(ctx, rows):
    """A finished match stage holding `rows` (url, text, entry_ids)."""
    d = ctx.out / "match"
    d.mkdir(parents=True)
    t = pa.table({"uid": [f"u{i:06d}" for i in range(len(rows))], "url": [r[0] for r in rows], "text": [r[1] for r in rows],
                  "page_url": [""] * len(rows), "lang": ["en"] * len(rows), "source": ["s"] * len(rows),
                  "record": list(range(len(rows))), "entry_ids": pa.array([r[2] for r in rows], pa.list_(pa.int64()))})
    pq.write_table(t, d / "w00000.parquet")
    n_entries = 1 + max(e for r in rows for e in r[2])
    counts = [sum(e in r[2] for r in rows) for e in range(n_entries)]
    pq.write_table(pa.table({"entry_id": list(range(n_entries)), "query": [f"q{e}" for e in range(n_entries)],
                             "count": pa.array(counts, pa.int64())}), d / "entry_counts.parquet")
    engine.write_json(d / engine.MARKER, {"key": "m", "state": "done", "stats": engine.Stats(rows_out=len(rows)).to_dict()})


def test_ten_thousand_urls_whose_hosts_never_answer_finish_within_a_minute(tmp_path):
    async def never_answers(host):
        await asyncio.sleep(3600)

    ctx = _ctx(tmp_path, never_answers, t=20_000, dns_timeout=2.0, dns_concurrency=1000)
    _matched_pool(ctx, [(f"http://host-{i}.example/img/{i}.jpg", f"caption {i}", [0]) for i in range(10_000)])
    engine.run(ctx, BY_NAME["balance"])
    t0 = time.perf_counter()
    stats, _ = engine.run(ctx, BY_NAME["download"])
    assert time.perf_counter() - t0 < 60
    assert stats.rows_in == 10_000 and stats.rows_out == 0 and dict(stats.dropped) == {"dns_timeout": 10_000}
    refused = pq.read_table(tmp_path / "download" / "refused.parquet")
    assert refused.num_rows == 10_000 and set(refused["reason"].to_pylist()) == {"dns_timeout"}
    assert stats.dns_max_in_flight == 1000


def test_the_unbalanced_baseline_is_a_uniform_sample_of_the_whole_pool(tmp_path):
    async def nowhere(host):
        raise OSError("no network in this test")  # every row stops at the guard: only the selection matters

    # a head entry (0) on 2,000 pairs and 200 tail entries on one pair each
    rows = [(f"http://h.example/{i}.jpg", f"head {i}", [0]) for i in range(2000)]
    rows += [(f"http://h.example/t{i}.jpg", f"tail {i}", [1 + i]) for i in range(200)]
    ctx = _ctx(tmp_path, nowhere, t=50)
    _matched_pool(ctx, rows)
    bal, _ = engine.run(ctx, BY_NAME["balance"])
    engine.run(ctx, BY_NAME["download"])
    t = pq.read_table(tmp_path / "download" / "refused.parquet").to_pylist()
    balanced = [r for r in t if r["in_balanced"]]
    unbalanced = [r for r in t if r["in_unbalanced"]]
    assert len(balanced) == bal.rows_out == len(unbalanced) == bal.unbalanced_baseline
    only_unbalanced = [r for r in unbalanced if not r["in_balanced"]]
    assert len(only_unbalanced) > 0.5 * len(unbalanced)  # not a subset of the balanced set
    head = lambda rs: sum(r["text"].startswith("head") for r in rs) / len(rs)
    assert 0.85 < head(unbalanced) < 0.97  # the pool's head share: 2000/2200 = 0.91
    assert head(balanced) < 0.35  # balancing flattened it: about 50 of 250
