"""Stage 2b of build-wit: substring matching of captions against the vocabulary (pyahocorasick).

MetaCLIP's rule (tasks/text_rules.py): an entry matches when ` entry ` occurs in the spaced
caption. One Aho-Corasick automaton holds every ` entry `; overlapping matches all count
("red circle" yields `red`, `circle` and `red circle`).

Speed: one `automaton.iter` pass per caption. A batched variant (captions joined with `\\n`,
one pass, hits mapped back by binary search) measured 0.88x of this with a 500k-entry
vocabulary in bench/matching.py, because the per-hit work dominates, so it was dropped.
Shards run in parallel (tasks/parallel.py).
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import ahocorasick
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.engine import Stats, atomic, mark_unit
from tasks.text_rules import automaton_key, spaced


def build_automaton(queries: list[str], entry_ids: list[int] | None = None, language: str = "en") -> ahocorasick.Automaton:
    auto = ahocorasick.Automaton()
    for i, q in zip(entry_ids if entry_ids is not None else range(len(queries)), queries):
        if q:
            auto.add_word(automaton_key(q, language), int(i))
    auto.make_automaton()
    return auto


def automaton_from_vocabulary(queries_path: Path, language: str = "en") -> ahocorasick.Automaton:
    t = pq.read_table(queries_path, columns=["entry_id", "query"])
    return build_automaton(t["query"].to_pylist(), t["entry_id"].to_pylist(), language)


def match_text(auto: ahocorasick.Automaton, text: str, case_sensitive: bool = True, language: str = "en") -> list[int]:
    """Sorted unique entry ids matching one caption (the straightforward way)."""
    return sorted({v for _end, v in auto.iter(spaced(text, case_sensitive, language))})


def match_texts(auto: ahocorasick.Automaton, texts: list[str], case_sensitive: bool = True,
                language: str = "en") -> list[list[int]]:
    """Sorted unique entry ids per caption: one automaton pass per caption.

    bench/matching.py measured a batched variant (captions joined, one pass, hits mapped back
    with numpy) at 0.88x of this loop with a 500k-entry vocabulary: the per-hit work dominates,
    not the per-call overhead, so the plain loop is what we use."""
    return [match_text(auto, t, case_sensitive, language) for t in texts]


def match_shard(auto: ahocorasick.Automaton | bytes, in_path: Path, out_path: Path, case_sensitive: bool = True,
                language: str = "en") -> Stats:
    """Candidates parquet -> matched rows (+ entry_ids) and per-entry counts; atomic, then marked done."""
    if isinstance(auto, bytes):
        auto = pickle.loads(auto)
    table = pq.read_table(in_path)
    ids = match_texts(auto, table["text"].to_pylist(), case_sensitive, language)
    keep = [i for i, e in enumerate(ids) if e]
    matched = table.take(pa.array(keep, pa.int64())).append_column(
        "entry_ids", pa.array([ids[i] for i in keep], pa.list_(pa.int64())))
    with atomic(out_path) as tmp:
        pq.write_table(matched, tmp)
    counts = Counter(e for i in keep for e in ids[i])
    with atomic(out_path.with_suffix(".counts.json")) as tmp:
        tmp.write_text(json.dumps(counts))
    stats = Stats(rows_in=table.num_rows, rows_out=len(keep))
    stats.drop("no_match", table.num_rows - len(keep))
    stats.counts["matches"] = sum(len(ids[i]) for i in keep)
    return mark_unit(out_path.parent, out_path.stem, stats)


def entry_counts(match_dir: Path, queries_path: Path, out_path: Path) -> pa.Table:
    """Global per-entry match counts (each pair counts once per entry) -> entry_counts.parquet."""
    total: Counter[int] = Counter()
    for f in sorted(match_dir.glob("*.counts.json")):
        total.update({int(k): v for k, v in json.loads(f.read_text()).items()})
    q = pq.read_table(queries_path, columns=["entry_id", "query"])
    counts = [total.get(i, 0) for i in q["entry_id"].to_pylist()]
    table = pa.table({"entry_id": q["entry_id"], "query": q["query"], "count": pa.array(counts, pa.int64())})
    tmp = out_path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.rename(out_path)
    return table
