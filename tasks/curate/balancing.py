"""Stage 2c of build-wit: MetaCLIP balancing to at most t pairs per query.

Each entry gets p = min(1, t / count). A pair is kept when any of its entries accepts it in an
independent draw, so P(keep) = 1 - prod(1 - p_i); pairs that match nothing were already
dropped. The draw for (pair, entry) is a hash of (seed, uid, entry_id), not a stream of random
numbers, so the output is the same whatever the number of shards or workers.

A multilingual build balances each language with its own t (MetaCLIP 2): English keeps `t`; every
other language gets the t at which the same share of its matches falls in tail entries as
English has at t (`t_to_p` on English, `p_to_t` on the language: the count at which the
cumulative share of the language's sorted entry counts is closest to English's tail share), or a
fixed t from the spec.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from tasks.engine import Stats, atomic, mark_unit, unit_stats, write_json

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uid_u64(uids) -> np.ndarray:
    """A 64-bit hash of each uid string (blake2b)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") for u in uids),
                       dtype=np.uint64, count=len(uids))


def uniform_draws(seed: int, uids: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    """u in [0, 1) for each (uid, entry); any uid string works (it is hashed whole). The entry's key
    is (seed << 40) | entry_id, so every (seed, entry) has its own stream (seed + entry_id gave
    seed 1's entry 5 the stream of seed 0's entry 6); seed 0 keys are the entry ids, as before."""
    if not 0 <= seed < 1 << 24:
        raise ValueError(f"balancing.seed must be in [0, 2^24), got {seed}")
    u64 = uid_u64(uids) if uids.dtype.kind in "OU" else uids
    with np.errstate(over="ignore"):
        x = _splitmix(u64 ^ _splitmix((np.uint64(seed) << np.uint64(40)) | entry_ids.astype(np.uint64)))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def keep_probabilities(counts: np.ndarray, t: int | np.ndarray) -> np.ndarray:
    """min(1, t / count) per entry; `t` one number or one per entry."""
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, np.minimum(1.0, t / np.maximum(counts, 1)), 0.0)


def t_to_p(counts: np.ndarray, t: int) -> float:
    """The share of matches held by tail entries (count < t)."""
    total = counts.sum()
    return float(counts[counts < t].sum() / total) if total else 0.0


def p_to_t(counts: np.ndarray, p: float) -> int:
    """The t whose tail share is closest to p: entries sorted by count, the count at which the
    cumulative share of matches is nearest to p (MetaCLIP 2's rule, zeros included)."""
    c = np.sort(np.asarray(counts, dtype=np.int64))
    if not c.sum():
        return 0
    portion = np.cumsum(c) / c.sum()
    return int(c[int(np.abs(portion - p).argmin())])


def entry_languages(counts: pa.Table) -> list[str]:
    """Each entry's language: entry_counts' `language` column; a table without one (written by an
    older match stage) is one language, counted as "en"."""
    return counts["language"].to_pylist() if "language" in counts.column_names else ["en"] * counts.num_rows


def language_thresholds(counts: pa.Table, spec) -> dict[str, int]:
    """t for every language of entry_counts (`language`, `count`), by the spec (BalancingSpec):
    English (or the first language when there is none) keeps max_pairs_per_query; the others get a
    fixed `t_by_language` or follow `language_t`."""
    languages = entry_languages(counts)
    langs = list(dict.fromkeys(languages))
    c = counts["count"].to_numpy()
    lang_col = np.array(languages, dtype=object)
    ref = "en" if "en" in langs else langs[0] if langs else "en"
    t = spec.max_pairs_per_query
    p_ref = t_to_p(c[lang_col == ref], t)
    out = {}
    for lang in langs:
        if lang in spec.t_by_language:
            out[lang] = int(spec.t_by_language[lang])
        elif lang == ref or spec.language_t == "same":
            out[lang] = int(t)
        else:
            out[lang] = max(1, p_to_t(c[lang_col == lang], p_ref))
    return out


def entry_thresholds(languages: list[str], t: int | dict[str, int]) -> np.ndarray:
    """Each entry's t, from its language."""
    if isinstance(t, int):
        return np.full(len(languages), t, dtype=np.int64)
    return np.array([t[lang] for lang in languages], dtype=np.int64)


def balance_table(matched: pa.Table, p_entry: np.ndarray, seed: int) -> tuple[pa.Table, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Rows of `matched` that survive balancing, each row's P(keep), and the draws per entry: for each
    entry, how many rows its own draw accepted (entry ids, counts). An entry expects min(count, t)
    draws: the distribution balancing shapes, before the other entries of a kept caption ride along."""
    lists = matched["entry_ids"]
    flat = pc.list_flatten(lists).to_numpy().astype(np.int64)
    lengths = pc.list_value_length(lists).to_numpy()
    row_of = np.repeat(np.arange(matched.num_rows), lengths)
    uids = np.array(matched["uid"].to_pylist(), dtype=object)
    u = uniform_draws(seed, uids[row_of], flat)
    p = p_entry[flat]
    accepted = np.zeros(matched.num_rows, dtype=bool)
    np.logical_or.at(accepted, row_of, u < p)
    log_miss = np.zeros(matched.num_rows)
    np.add.at(log_miss, row_of, np.log1p(-np.minimum(p, 1 - 1e-12)))
    p_keep = 1 - np.exp(log_miss)
    p_keep[np.isin(np.arange(matched.num_rows), row_of[p >= 1])] = 1.0
    keep_idx = np.nonzero(accepted)[0]
    out = matched.take(pa.array(keep_idx)).append_column("p_keep", pa.array(p_keep[keep_idx]))
    drawn_ids, drawn_n = np.unique(flat[u < p], return_counts=True)
    return out, p_keep, (drawn_ids.astype(np.int64), drawn_n.astype(np.int64))


class LanguagePairs(BaseModel):
    pool: int = 0
    kept: int = 0


class ShardBalance(Stats):
    """One matched shard balanced (a unit: a crashed stage resumes shard by shard)."""

    expected: float = 0.0  # sum of P(keep)
    by_language: dict[str, LanguagePairs] = Field(default_factory=dict)


class LanguageBalance(BaseModel):
    """One language's row in the data card."""

    t: int
    entries: int
    entries_matched: int
    matches: int
    tail_share_at_t: float
    head_entries: int
    head_share_before: float
    head_share_after: float
    head_share_drawn: float | None
    entries_by_count_band: dict[str, int]


class BalanceStats(Stats):
    """The balance stage: matched pool (rows_in) -> balanced set (rows_out), and what it did to the head."""

    t: int = 0  # of English, or of the build's only language
    t_by_language: dict[str, int] = Field(default_factory=dict)
    seed: int = 0
    expected_kept: float = 0.0
    pairs_by_language: dict[str, LanguagePairs] = Field(default_factory=dict)
    unbalanced_baseline: int = 0  # pairs in the unbalanced baseline (as many as kept)
    # the head: entries with >= t matches in the pool, the same entries before and after
    head_entries: int = 0
    head_share_before: float = 0.0  # of the pool's matches
    head_share_after: float = 0.0  # of the balanced set's matches
    head_share_drawn: float | None = None  # of the draws that kept pairs
    entries_by_count_band: dict[str, int] = Field(default_factory=dict)
    top_entries: list[tuple[str, int, int]] = Field(default_factory=list)  # (query, matches before, after)
    by_language: dict[str, LanguageBalance] = Field(default_factory=dict)


def balance_shard(match_file: str, p_entry_path: str, out_path: str, seed: int, keep_all: bool = False) -> ShardBalance:
    """Balance one matched shard into `out_path` and its per-entry counts into `entries/<name>`
    (entry_id, kept: matches among kept pairs, drawn: pairs its own draw accepted), atomically,
    then mark the shard done: a unit of parallel work."""
    p_entry = np.load(p_entry_path)
    matched = pq.read_table(match_file)
    if keep_all:  # curation none: the set is the user's, not drawn
        p_keep, drawn_ids, drawn_n = np.ones(matched.num_rows), np.zeros(0, np.int64), np.zeros(0, np.int64)
        out = matched.append_column("p_keep", pa.array(p_keep))
    else:
        out, p_keep, (drawn_ids, drawn_n) = balance_table(matched, p_entry, seed)
    st = ShardBalance(rows_in=matched.num_rows, rows_out=out.num_rows, expected=float(p_keep.sum()))
    st.drop("balanced_out", matched.num_rows - out.num_rows)
    if "lang" in matched.column_names:
        for col, table in (("pool", matched), ("kept", out)):
            for lang, n in zip(*np.unique(np.array(table["lang"].to_pylist(), dtype=str), return_counts=True)):
                pairs = st.by_language.setdefault(str(lang), LanguagePairs())
                setattr(pairs, col, getattr(pairs, col) + int(n))
    kept_ids, kept_n = np.unique(pc.list_flatten(out["entry_ids"]).to_numpy(), return_counts=True) if out.num_rows else ([], [])
    ids = np.union1d(np.asarray(kept_ids, np.int64), drawn_ids).astype(np.int64)
    kept = np.zeros(len(ids), np.int64)
    kept[np.searchsorted(ids, kept_ids)] = kept_n
    drawn = np.zeros(len(ids), np.int64)
    drawn[np.searchsorted(ids, drawn_ids)] = drawn_n
    out_path = Path(out_path)
    with atomic(out_path) as tmp:
        pq.write_table(out, tmp)
    with atomic(out_path.parent / "entries" / out_path.name) as tmp:
        pq.write_table(pa.table({"entry_id": ids, "kept": kept, "drawn": drawn}), tmp)
    return mark_unit(out_path.parent, out_path.stem, st)


def balance_shards(match_files: list[Path], counts_path: Path, out_dir: Path, t: int | dict[str, int], seed: int,
                   workers: int = 1, ray_address: str | None = None, log=None, keep_all: bool = False) -> BalanceStats:
    """Balance every matched shard into out_dir/NNNNN.parquet (shards in parallel; shards already
    done by an interrupted run are kept); entry_counts_after.parquet sums the shards' counts.
    `t`: one threshold, or one per language (entry_counts' `language` column). Memory per worker
    is one shard and the per-entry probabilities; the driver holds per-entry counts only."""
    from tasks.parallel import run_parallel

    counts = pq.read_table(counts_path)
    languages = entry_languages(counts)
    p_entry = keep_probabilities(counts["count"].to_numpy(), entry_thresholds(languages, t))
    out_dir.mkdir(parents=True, exist_ok=True)
    p_path = out_dir / "p_entry.npy"
    with atomic(p_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, p_entry)
    names = [f"{i:05d}" for i in range(len(match_files))]
    todo = [(str(f), str(p_path), str(out_dir / f"{n}.parquet"), seed, keep_all) for f, n in zip(match_files, names)
            if unit_stats(out_dir, n) is None]
    if log and len(todo) < len(names):
        log(f"balance: {len(names) - len(todo)} shards balanced earlier, {len(todo)} to balance")
    run_parallel(balance_shard, todo, workers, ray_address, "balance: shards", log)
    p_path.unlink()
    stats = BalanceStats(t=t if isinstance(t, int) else t.get("en", next(iter(t.values()), 0)), seed=seed,
                         t_by_language={} if isinstance(t, int) else dict(t))
    kept_counts = np.zeros(len(p_entry), dtype=np.int64)
    drawn_counts = np.zeros(len(p_entry), dtype=np.int64)
    for n in names:
        st = unit_stats(out_dir, n, ShardBalance)
        stats.add(st)
        stats.expected_kept += st.expected
        for lang, pairs in st.by_language.items():
            total = stats.pairs_by_language.setdefault(lang, LanguagePairs())
            total.pool, total.kept = total.pool + pairs.pool, total.kept + pairs.kept
        e = pq.read_table(out_dir / "entries" / f"{n}.parquet").to_pydict()
        np.add.at(kept_counts, np.asarray(e["entry_id"], np.int64), np.asarray(e["kept"], np.int64))
        np.add.at(drawn_counts, np.asarray(e["entry_id"], np.int64), np.asarray(e["drawn"], np.int64))
    stats.expected_kept = round(stats.expected_kept, 1)
    stats.pairs_by_language = dict(sorted(stats.pairs_by_language.items()))
    # count_after: matches in the kept pairs; drawn: kept pairs each entry's own draw accepted
    with atomic(out_dir / "entry_counts_after.parquet") as tmp:
        pq.write_table(pa.table({"entry_id": counts["entry_id"], "count_after": kept_counts, "drawn": drawn_counts}), tmp)
    return stats


# ----------------------------------------------------------------------------- the unbalanced baseline
# A uniform sample of n matched pairs, drawn without holding the pool: every pair gets a 64-bit
# rank hash of (seed, uid), and the sample is the n pairs with the smallest ranks. Pass 1 counts
# ranks in 4,096 bins per shard; the bin where the cumulative count reaches n is the only one
# whose ranks are collected (pass 2); the n-th smallest rank is `h_max`, and a pair belongs to
# the baseline when its rank is <= h_max. The download stage applies that rule shard by shard.
# Exact size, the same sample whatever the sharding, memory of one shard plus one bin.
_BIN_BITS = 12


def rank_hashes(seed: int, uids: list[str]) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _splitmix(uid_u64(uids) ^ _splitmix(np.uint64(seed) ^ np.uint64(0x5EED_0F_BA5E_11E5)))


def _rank_histogram_job(path: str, seed: int) -> np.ndarray:
    h = rank_hashes(seed, pq.read_table(path, columns=["uid"])["uid"].to_pylist())
    return np.bincount((h >> np.uint64(64 - _BIN_BITS)).astype(np.int64), minlength=1 << _BIN_BITS)


def _rank_bin_job(path: str, seed: int, b: int) -> np.ndarray:
    h = rank_hashes(seed, pq.read_table(path, columns=["uid"])["uid"].to_pylist())
    return h[(h >> np.uint64(64 - _BIN_BITS)) == np.uint64(b)]


def unbalanced_sample(match_files: list[Path], n: int, seed: int, out_path: Path, workers: int = 1,
                      ray_address: str | None = None, log=None) -> int:
    """Choose the "no balancing" baseline: a uniform sample of n matched pairs (the size of the
    balanced set). Writes {"n", "seed", "h_max"} to `out_path`; `in_unbalanced` applies it."""
    from tasks.parallel import run_parallel

    files = [str(f) for f in match_files]
    hist = np.sum(run_parallel(_rank_histogram_job, [(f, seed) for f in files], workers, ray_address,
                               "balance: baseline ranks", log) or [np.zeros(1 << _BIN_BITS, np.int64)], axis=0)
    n = int(min(n, hist.sum()))
    h_max = None
    if n:
        cum = np.cumsum(hist)
        b = int(np.searchsorted(cum, n))
        below = int(cum[b - 1]) if b else 0
        ranks = np.sort(np.concatenate(run_parallel(_rank_bin_job, [(f, seed, b) for f in files], workers, ray_address,
                                                    "balance: baseline bin", log)))
        h_max = int(ranks[n - below - 1])
    write_json(out_path, {"n": n, "seed": seed, "h_max": h_max})
    return n


def in_unbalanced(uids: list[str], baseline: dict) -> np.ndarray:
    """Which of `uids` belong to the unbalanced baseline chosen by `unbalanced_sample`."""
    if not baseline.get("n") or baseline.get("h_max") is None:
        return np.zeros(len(uids), dtype=bool)
    return rank_hashes(baseline["seed"], uids) <= np.uint64(baseline["h_max"])
