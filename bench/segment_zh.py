"""Chinese word segmentation for the zh vocabulary: jieba (pure Python) against rjieba (jieba's
dictionary and algorithm in Rust), on real Chinese text.

    python bench/segment_zh.py

Text (all real, none written for this project): the Chinese of the Common Crawl WARC excerpt in
../shared/data/warc (page text extracted with Resiliparse, lines with Han characters) and spaCy's
Chinese example sentences (bench/data/spacy_example_sentences.json). Both segmenters cut the same
text in the same process, alternating rounds; printed: characters per second (one thread), and
how often they agree (share of jieba's tokens that rjieba produces at the same position).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED, report, row

HAN = re.compile(r"[\u4e00-\u9fff]")


def texts() -> list[str]:
    out = []
    warc = SHARED / "warc/cc-main-2020-34-excerpt.warc.gz"
    if warc.exists():
        from fastwarc.warc import ArchiveIterator, WarcRecordType
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        with open(warc, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response):
                body = rec.reader.read()
                html = bytes_to_str(body, detect_encoding(body))
                out += [ln.strip() for ln in extract_plain_text(html).splitlines() if len(HAN.findall(ln)) >= 4]
    data = json.loads((ROOT / "bench/data/spacy_example_sentences.json").read_text())
    out += data["sentences"]["zh"]
    return out


def spans(tokens: list[str]) -> set[tuple[int, int]]:
    out, i = set(), 0
    for t in tokens:
        out.add((i, i + len(t)))
        i += len(t)
    return out


def main() -> int:
    import jieba
    import rjieba

    jieba.setLogLevel(60)
    lines = texts()
    chars = sum(len(s) for s in lines)
    cut_j = lambda s: list(jieba.cut(s, HMM=True))
    cut_r = rjieba.cut
    cut_j(lines[0]), cut_r(lines[0])  # load dictionaries outside the timing
    t = {"jieba": 0.0, "rjieba": 0.0}
    for _ in range(5):
        for name, cut in (("jieba", cut_j), ("rjieba", cut_r)):
            t0 = time.perf_counter()
            for s in lines:
                cut(s)
            t[name] += time.perf_counter() - t0
    same = total = 0
    for s in lines:
        a, b = spans(cut_j(s)), spans(cut_r(s))
        same += len(a & b)
        total += len(a)
    rows = [
        row("chars/s: rjieba vs jieba", chars * 5 / t["rjieba"], chars * 5 / t["jieba"], "chars/s",
            f"{len(lines)} real lines, {chars:,} chars, 5 alternating rounds"),
        row("tokens of jieba that rjieba cuts identically", same / total, None, "share", "same dictionary and HMM"),
    ]
    report("segment_zh", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
