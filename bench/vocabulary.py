"""Vocabulary counting throughput and peak memory on the real Wikipedia excerpt, repeated.

    python bench/vocabulary.py [--mb 500]

Builds an uncompressed pages-articles XML of at least --mb MB by repeating the pages of
../shared/data/wiki/enwiki-2016-sample.xml.bz2, then, each in a fresh process:
  ours:  tasks.vocabulary.count_dump_part (stream, clean, count, spill to hash partitions);
         at --mb and at half of it: peak memory must not grow with the corpus;
  naive: the same streaming parse and cleaning, counted into two in-memory Counters (no
         spilling; what one writes first), at both sizes.
By default each copy renames some words (see make_corpus) so that distinct keys grow with size.
Throughput is MB of wikitext (the <text> contents) per second per core (one process = one core).

Chinese (`--zh-mb`, default 50): the real Chinese text of the Common Crawl excerpt (the lines
bench/segment_zh.py segments) as articles of a zhwiki-style dump, counted by the zh path (OpenCC to
Simplified, rjieba segmentation, no-space bigrams), against the English path on an English corpus
of the same size in the same run.
"""

from __future__ import annotations

import argparse
import bz2
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, report, row, run_child

OURS = r"""
import json, sys, time, resource, tempfile
from pathlib import Path
from tasks.vocabulary.build import count_dump_part
t0 = time.perf_counter()
with tempfile.TemporaryDirectory() as d:
    r = count_dump_part(sys.argv[1], str(Path(d) / "part"), 16, int(sys.argv[2]), True, sys.argv[3] if len(sys.argv) > 3 else "en")
    spill = sum(f.stat().st_size for f in (Path(d) / "part").rglob("*.parquet"))
print(json.dumps({"s": time.perf_counter() - t0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tokens": r.stats["tokens"], "spill_mb": spill / 1e6}))
"""

NAIVE = r"""
import json, sys, time, resource
from collections import Counter
from tasks.vocabulary.wikitext import iter_article_texts
from tasks.vocabulary.text_rules import tokens, is_word
t0 = time.perf_counter()
uni, bi, n = Counter(), Counter(), 0
for _title, text in iter_article_texts(sys.argv[1]):
    w = [t for t in tokens(text) if is_word(t)]
    n += len(w)
    uni.update(w)
    bi.update(f"{a} {b}" for a, b in zip(w, w[1:]))
print(json.dumps({"s": time.perf_counter() - t0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tokens": n, "distinct": len(uni) + len(bi)}))
"""


def make_corpus(src: Path, mb: float, out: Path, vary: bool) -> float:
    """Write header + pages repeated until >= mb MB; returns MB of wikitext inside <text>.

    vary: in copy k, every word of 7+ letters that starts with a vowel gets the suffix `xk`, so
    the number of distinct unigrams and bigrams grows with the corpus as it does in a real dump
    (plain repetition adds none, which flatters an in-memory counter)."""
    xml = bz2.decompress(src.read_bytes()).decode("utf-8")
    first, last = xml.index("<page>"), xml.rindex("</page>") + len("</page>")
    head, pages, tail = xml[:first], xml[first:last], xml[last:]
    text_mb = sum(len(m.group(1).encode()) for m in re.finditer(r"<text[^>]*>(.*?)</text>", pages, re.DOTALL)) / 1e6
    reps = max(1, int(mb * 1e6 / len(pages.encode())) + 1)
    word = re.compile(r"\b([aeiouAEIOU][a-z]{6,})\b")
    with open(out, "w", encoding="utf-8") as f:
        f.write(head)
        f.writelines(word.sub(lambda m, k=k: f"{m.group(1)}x{k}", pages) if vary else pages for k in range(reps))
        f.write(tail)
    return text_mb * reps


def make_zh_corpus(mb: float, out: Path) -> float:
    """A zhwiki-style XML of the excerpt's real Chinese lines, 40 lines an article, repeated to
    >= mb MB of wikitext; returns the MB of wikitext."""
    from xml.sax.saxutils import escape

    from segment_zh import texts

    lines = texts()
    if not lines:
        sys.exit("no Chinese text: this benchmark reads ../shared/data/warc")
    pages = "".join(f"<page><title>页面{i}</title><ns>0</ns><id>{i + 1}</id><revision><text>{escape(chr(10).join(lines[i:i + 40]))}</text></revision></page>"
                    for i in range(0, len(lines), 40))
    text_mb = sum(len("\n".join(lines[i:i + 40]).encode()) for i in range(0, len(lines), 40)) / 1e6
    reps = max(1, int(mb / text_mb) + 1)
    with open(out, "w", encoding="utf-8") as f:
        f.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="zh">')
        f.writelines(pages for _ in range(reps))
        f.write("</mediawiki>")
    return text_mb * reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=500)
    ap.add_argument("--spill-items", type=int, default=2_000_000, help="VocabularySpec.wikipedia.spill_items")
    ap.add_argument("--zh-mb", type=float, default=50, help="MB of Chinese wikitext for the zh path (0: skip)")
    ap.add_argument("--vary", action=argparse.BooleanOptionalAction, default=True,
                    help="make distinct keys grow with size (default); --no-vary repeats the excerpt verbatim")
    a = ap.parse_args()
    src = SHARED / "wiki" / "enwiki-2016-sample.xml.bz2"
    if not src.exists():
        sys.exit(f"{src} is missing (../shared/data)")
    with tempfile.TemporaryDirectory() as d:
        big, half = Path(d) / "big.xml", Path(d) / "half.xml"
        big_mb, half_mb = make_corpus(src, a.mb, big, a.vary), make_corpus(src, a.mb / 2, half, a.vary)
        print(f"corpus: {big.stat().st_size / 1e6:.0f} MB XML ({big_mb:.0f} MB wikitext); half: {half.stat().st_size / 1e6:.0f} MB", flush=True)
        naive = run_child(NAIVE, str(half))
        print(f"naive on half: {naive}", flush=True)
        ours_half = run_child(OURS, str(half), str(a.spill_items))
        print(f"ours on half:  {ours_half}", flush=True)
        ours = run_child(OURS, str(big), str(a.spill_items))
        print(f"ours on full:  {ours}", flush=True)
        naive_big = run_child(NAIVE, str(big))
        print(f"naive on full: {naive_big}", flush=True)
        zh_rows = []
        if a.zh_mb:
            zh, en_same = Path(d) / "zh.xml", Path(d) / "en-same.xml"
            zh_mb, en_mb = make_zh_corpus(a.zh_mb, zh), make_corpus(src, a.zh_mb, en_same, a.vary)
            ours_zh = run_child(OURS, str(zh), str(a.spill_items), "zh")
            print(f"zh path on {zh_mb:.0f} MB: {ours_zh}", flush=True)
            ours_en = run_child(OURS, str(en_same), str(a.spill_items), "en")
            print(f"en path on {en_mb:.0f} MB: {ours_en}", flush=True)
            zh_rows = [row(f"zh wikitext MB/s/core, {zh_mb:.0f} MB (baseline: English path, {en_mb:.0f} MB)", zh_mb / ours_zh["s"],
                           en_mb / ours_en["s"], "MB/s", f"OpenCC t2s + rjieba; {ours_zh['tokens']:,} zh tokens; peak RSS "
                           f"{ours_zh['rss_mb']:.0f} MB (en {ours_en['rss_mb']:.0f} MB)")]
    rows = [
        row(f"wikitext MB/s/core, {half_mb:.0f} MB", half_mb / ours_half["s"], half_mb / naive["s"], "MB/s", "naive: in-memory Counters"),
        row(f"wikitext MB/s/core, {big_mb:.0f} MB", big_mb / ours["s"], big_mb / naive_big["s"], "MB/s", "naive: in-memory Counters"),
        row(f"peak RSS, {half_mb:.0f} MB corpus", ours_half["rss_mb"], naive["rss_mb"], "MB", "lower is better"),
        row(f"peak RSS, {big_mb:.0f} MB corpus", ours["rss_mb"], naive_big["rss_mb"], "MB", "lower is better"),
        row(f"peak RSS growth {half_mb:.0f} -> {big_mb:.0f} MB, ours (baseline: naive's growth)", ours["rss_mb"] / ours_half["rss_mb"],
            naive_big["rss_mb"] / naive["rss_mb"], "x", f"spill_items={a.spill_items}, distinct keys vary={a.vary}"),
        *zh_rows,
    ]
    report("vocabulary", rows, {"tokens_full": ours["tokens"], "spill_mb_full": ours["spill_mb"],
                                "naive_distinct_keys": [naive["distinct"], naive_big["distinct"]]})


if __name__ == "__main__":
    main()
