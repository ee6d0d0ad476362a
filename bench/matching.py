"""Substring matching throughput: our batched Aho-Corasick matcher against two baselines.

    python bench/matching.py [--entries 500000] [--captions 1000000]

Vocabulary: WordNet 3.0 head names, the words of the real Wikipedia excerpt, and bigrams of
those words up to --entries (MetaCLIP's ~500k). Captions: the 10,000 real LAION captions of
../shared/data/tables, cycled to --captions. All three give the same entry ids (checked).
  ours:         tasks.curate.matching.match_texts as the build runs it (one pass per caption; a batched
                variant that joined captions measured 0.88x and was dropped)
  pyahocorasick: the straightforward loop, tasks.curate.matching.match_text per caption
  plain loop:   `' ' + entry + ' ' in spaced(caption)` over every entry (sampled: it is slow)
Captions per second per core (one process).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, peak_rss_mb, report, row


def vocabulary(n: int) -> list[str]:
    import bz2

    from tasks.vocabulary.wordnet import synset_head_names

    names: set[str] = set()
    try:
        names, _ = synset_head_names("/usr/share/wordnet")
    except Exception as e:  # noqa: BLE001
        print(f"(no WordNet: {e})")
    text = bz2.decompress((SHARED / "wiki" / "enwiki-2016-sample.xml.bz2").read_bytes()).decode("utf-8", "replace")
    words = sorted({w for w in re.findall(r"[A-Za-z][a-z]{2,}", text)})
    vocab = set(names) | set(words)
    rng = random.Random(0)
    while len(vocab) < n:
        vocab.add(f"{rng.choice(words)} {rng.choice(words)}")
    return sorted(vocab)[:n] if len(vocab) > n else sorted(vocab)


def main() -> None:
    import pyarrow.parquet as pq

    from tasks.curate.matching import build_automaton, match_text, match_texts
    from tasks.vocabulary.text_rules import spaced

    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--captions", type=int, default=1_000_000)
    ap.add_argument("--plain-sample", type=int, default=100)
    a = ap.parse_args()
    laion = SHARED / "tables" / "laion400m-meta-10000.parquet"
    if not laion.exists():
        sys.exit(f"{laion} is missing (../shared/data)")
    real = [t for t in pq.read_table(laion, columns=["TEXT"])["TEXT"].to_pylist() if t]
    captions = [real[i % len(real)] for i in range(a.captions)]
    vocab = vocabulary(a.entries)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    auto = build_automaton(vocab)
    build_s = time.perf_counter() - t0
    rss_auto = peak_rss_mb()
    print(f"{len(vocab):,} entries, automaton built in {build_s:.1f}s; {len(captions):,} captions", flush=True)

    t0 = time.perf_counter()
    ours = match_texts(auto, captions)
    ours_rate = len(captions) / (time.perf_counter() - t0)
    n_simple = min(len(captions), 200_000)
    t0 = time.perf_counter()
    simple = [match_text(auto, c) for c in captions[:n_simple]]
    simple_rate = n_simple / (time.perf_counter() - t0)
    assert simple == ours[:n_simple], "the batched matcher disagrees with the straightforward loop"

    entries = [(i, f" {q} ") for i, q in enumerate(vocab)]
    sample = captions[: a.plain_sample]
    t0 = time.perf_counter()
    plain = [[i for i, e in entries if e in spaced(c)] for c in sample]
    plain_rate = len(sample) / (time.perf_counter() - t0)
    assert plain == ours[: len(sample)], "the plain loop disagrees with the automaton"
    matched = sum(1 for m in ours if m) / len(ours)
    rows = [
        row("captions/s/core vs straightforward pyahocorasick", ours_rate, simple_rate, "captions/s", f"{n_simple:,} captions"),
        row("captions/s/core vs plain `entry in text` loop", ours_rate, plain_rate, "captions/s", f"plain loop sampled on {len(sample)}"),
        row("automaton build time", build_s, None, "s", f"{len(vocab):,} entries"),
        row("peak RSS after building the automaton", rss_auto, rss0, "MB", "baseline: before building"),
    ]
    report("matching", rows, {"matched_share": matched, "entries": len(vocab), "captions": len(captions)})


if __name__ == "__main__":
    main()
