"""Stage 2b of build-wit: substring matching of captions against the vocabulary (pyahocorasick).

MetaCLIP's rule (tasks/text_rules.py): an entry matches when ` entry ` occurs in the spaced
caption. One Aho-Corasick automaton holds every ` entry `; overlapping matches all count
("red circle" yields `red`, `circle` and `red circle`).

Speed: one `automaton.iter` pass per caption. A batched variant (captions joined with `\\n`,
one pass, hits mapped back by binary search) measured 0.88x of this with a 500k-entry
vocabulary in bench/matching.py, because the per-hit work dominates, so it was dropped.
Shards run in parallel (tasks/parallel.py).

A multilingual build (MetaCLIP 2) has one automaton per language: a caption is matched only
against the vocabulary of the language that language ID gave it (the candidates' `lang`), with
that language's rules; a caption in a language the build has no vocabulary for matches nothing
(`language_without_vocabulary`). A build with one vocabulary matches every caption against it.
"""

from __future__ import annotations

import functools
import json
import pickle
from collections import Counter
from pathlib import Path

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tasks.engine import Stats, atomic, mark_unit
from tasks.vocabulary.text_rules import automaton_key, spaced


def build_automaton(queries: list[str], entry_ids: list[int] | None = None, language: str = "en") -> ahocorasick.Automaton:
    auto = ahocorasick.Automaton()
    for i, q in zip(entry_ids if entry_ids is not None else range(len(queries)), queries):
        if q:
            auto.add_word(automaton_key(q, language), int(i))
    auto.make_automaton()
    return auto


def automata_from_vocabulary(queries_path: Path) -> dict[str, ahocorasick.Automaton]:
    """One automaton per language of queries.parquet (its `language` column), entry ids global."""
    t = pq.read_table(queries_path)
    langs = t["language"].to_pylist() if "language" in t.column_names else ["en"] * t.num_rows  # an older vocabulary: English
    by_lang: dict[str, tuple[list[str], list[int]]] = {}
    for e, q, lang in zip(t["entry_id"].to_pylist(), t["query"].to_pylist(), langs):
        qs, ids = by_lang.setdefault(lang, ([], []))
        qs.append(q)
        ids.append(e)
    return {lang: build_automaton(qs, ids, lang) for lang, (qs, ids) in by_lang.items()}


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


def match_routed(automata: dict[str, ahocorasick.Automaton], texts: list[str], langs: list[str],
                 case_sensitive: bool = True) -> tuple[list[list[int]], int]:
    """Entry ids per caption, each caption matched against its language's automaton; with one
    automaton every caption uses it. Also returns how many captions had no vocabulary."""
    if len(automata) == 1:
        (lang, auto), = automata.items()
        return match_texts(auto, texts, case_sensitive, lang), 0
    out, missing = [], 0
    for text, lang in zip(texts, langs):
        auto = automata.get(lang)
        if auto is None:
            missing += 1
            out.append([])
        else:
            out.append(match_text(auto, text, case_sensitive, lang))
    return out, missing


@functools.lru_cache(maxsize=2)
def load_automata(path: str) -> dict[str, ahocorasick.Automaton]:
    """The match stage's automata, pickled once to `path` and loaded once per worker process."""
    with open(path, "rb") as f:
        return pickle.load(f)


class MatchStats(Stats):
    """The match stage: candidates (rows_in) -> pairs matching >= 1 entry (rows_out)."""

    entries_matched: int = 0
    candidates_by_language: dict[str, int] = Field(default_factory=dict)
    worst_urls: list[tuple[str, int]] = Field(default_factory=list)  # URLs dropped for too many distinct captions, most first


def match_shard(auto: ahocorasick.Automaton | dict, in_path: Path, out_path: Path, case_sensitive: bool = True,
                language: str = "en", skip_rows: np.ndarray | None = None, skip_reasons: np.ndarray | None = None) -> Stats:
    """Candidates parquet -> matched rows (+ entry_ids) and per-entry counts; atomic, then marked done.
    `auto`: one automaton (for `language`), {language: automaton}, or None (curation none: every
    row is kept with no entries).
    `skip_rows`: rows the cross-file pass drops (tasks/curate/dedup.py), each for its reason in
    `skip_reasons` (DEDUP_REASONS: a pair another file holds, a URL with too many captions)."""
    from tasks.curate.dedup import DEDUP_REASONS

    automata = auto if isinstance(auto, dict) or auto is None else {language: auto}
    table = pq.read_table(in_path)
    rows_in = table.num_rows
    stats = Stats(rows_in=rows_in)
    if skip_rows is not None and len(skip_rows):
        keep_mask = np.ones(table.num_rows, bool)
        keep_mask[skip_rows] = False
        for code, n in zip(*np.unique(skip_reasons if skip_reasons is not None else np.zeros(len(skip_rows), np.int8),
                                      return_counts=True)):
            stats.drop(DEDUP_REASONS[int(code)], int(n))
        table = table.filter(pa.array(keep_mask))
    langs = table["lang"].to_pylist() if "lang" in table.column_names else [None] * table.num_rows
    if automata is None:  # curation none: every candidate is kept, matching no entry
        ids, no_vocabulary = [[-1]] * table.num_rows, 0
    else:
        ids, no_vocabulary = match_routed(automata, table["text"].to_pylist(), langs, case_sensitive)
    keep = [i for i, e in enumerate(ids) if e]
    matched = table.take(pa.array(keep, pa.int64())).append_column(
        "entry_ids", pa.array([[e for e in ids[i] if e >= 0] for i in keep], pa.list_(pa.int64())))
    with atomic(out_path) as tmp:
        pq.write_table(matched, tmp)
    counts = Counter(e for i in keep for e in ids[i] if e >= 0)
    with atomic(out_path.with_suffix(".counts.json")) as tmp:
        tmp.write_text(json.dumps(counts))
    stats.rows_out = len(keep)
    stats.drop("no_match", table.num_rows - len(keep) - no_vocabulary)
    if no_vocabulary:
        stats.drop("language_without_vocabulary", no_vocabulary)
    stats.counts["matches"] = int(matched["entry_ids"].combine_chunks().value_lengths().to_numpy().sum()) if keep else 0
    return mark_unit(out_path.parent, out_path.stem, stats)


def entry_counts(match_dir: Path, queries_path: Path, out_path: Path) -> pa.Table:
    """Global per-entry match counts (each pair counts once per entry) -> entry_counts.parquet."""
    total: Counter[int] = Counter()
    for f in sorted(match_dir.glob("*.counts.json")):
        total.update({int(k): v for k, v in json.loads(f.read_text()).items()})
    q = pq.read_table(queries_path)
    counts = [total.get(i, 0) for i in q["entry_id"].to_pylist()]
    language = q["language"] if "language" in q.column_names else pa.array(["en"] * q.num_rows, pa.string())
    table = pa.table({"entry_id": q["entry_id"], "query": q["query"], "language": language, "count": pa.array(counts, pa.int64())})
    with atomic(out_path) as tmp:
        pq.write_table(table, tmp)
    return table
