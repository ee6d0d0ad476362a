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
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uniform_draws(seed: int, uids: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    """u in [0, 1) for each (uid, entry); any uid string works (it is hashed whole)."""
    if uids.dtype.kind in "OU":
        u64 = np.array([int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") for u in uids], dtype=np.uint64)
    else:
        u64 = uids
    with np.errstate(over="ignore"):
        x = _splitmix(u64 ^ _splitmix(np.uint64(seed) + entry_ids.astype(np.uint64)))
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


def balance_table(matched: pa.Table, p_entry: np.ndarray, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Rows of `matched` that survive balancing, and each row's P(keep)."""
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
    return out, p_keep


def balance_shards(match_files: list[Path], counts_path: Path, out_dir: Path, t: int | dict[str, int], seed: int) -> dict:
    """Balance every matched shard into out_dir/NNNNN.parquet; return sizes and expectations.
    `t`: one threshold, or one per language (entry_counts' `language` column)."""
    counts = pq.read_table(counts_path)
    languages = entry_languages(counts)
    p_entry = keep_probabilities(counts["count"].to_numpy(), entry_thresholds(languages, t))
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = kept = 0
    expected = 0.0
    by_lang: dict[str, dict[str, int]] = {}
    kept_counts = np.zeros(len(p_entry), dtype=np.int64)
    for i, f in enumerate(match_files):
        matched = pq.read_table(f)
        out, p_keep = balance_table(matched, p_entry, seed)
        pool += matched.num_rows
        kept += out.num_rows
        if "lang" in matched.column_names:
            for col, table in (("pool", matched), ("kept", out)):
                for lang, n in zip(*np.unique(np.array(table["lang"].to_pylist(), dtype=str), return_counts=True)):
                    by_lang.setdefault(str(lang), {"pool": 0, "kept": 0})[col] += int(n)
        expected += float(p_keep.sum())
        if out.num_rows:
            np.add.at(kept_counts, pc.list_flatten(out["entry_ids"]).to_numpy(), 1)
        tmp = out_dir / f"{i:05d}.parquet.tmp"
        pq.write_table(out, tmp)
        tmp.rename(out_dir / f"{i:05d}.parquet")
    pq.write_table(pa.table({"entry_id": counts["entry_id"], "count_after": kept_counts}), out_dir / "entry_counts_after.parquet")
    t_ref = t if isinstance(t, int) else t.get("en", next(iter(t.values()), 0))
    stats = {"pool": pool, "kept": kept, "expected_kept": round(expected, 1), "t": t_ref, "seed": seed,
             "pairs_by_language": dict(sorted(by_lang.items()))}
    if not isinstance(t, int):
        stats["t_by_language"] = t
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def unbalanced_sample(match_files: list[Path], n: int, seed: int, out_path: Path) -> int:
    """A uniform sample of n matched pairs: the "no balancing" baseline of the same size."""
    uids = pa.concat_arrays([pq.read_table(f, columns=["uid"])["uid"].combine_chunks() for f in match_files]) if match_files else pa.array([], pa.string())
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(uids), size=min(n, len(uids)), replace=False) if len(uids) else np.array([], dtype=np.int64)
    pq.write_table(pa.table({"uid": uids.take(pa.array(np.sort(pick)))}), out_path)
    return len(pick)
