"""Alt text on real pages: where the image URL comes from, and how many captions one URL carries.

    python bench/alt_text.py --readability /path/to/mozilla/readability

Pages: the 130 real pages of Mozilla Readability's test suite (news sites, blogs, a Chinese news
portal and a Taiwanese blog, saved with their markup) and the real Common Crawl excerpt
(tests/data/warc). Printed: which <img> attribute gave each captioned URL (a placeholder `src`
replaced by `data-src`, `data-original`, `data-srcset`, ...), and the number of distinct captions
per image URL across all pages, which sets `crawl.max_captions_per_url`'s default: real pictures
carry one or two, the spacers, placeholders and icons many.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urljoin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED, report, row


def pages(readability: Path):
    names = subprocess.run(["git", "-C", str(readability), "ls-tree", "--name-only", "HEAD", "test/test-pages/"], capture_output=True,
                           text=True, check=True).stdout.split()
    for d in names:
        body = subprocess.run(["git", "-C", str(readability), "show", f"HEAD:{d}/source.html"], capture_output=True, check=False).stdout
        yield f"https://{Path(d).name}.example/", body
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    from tasks.crawl.warc import http_body, target_uri

    with open(SHARED / "warc/cc-main-2020-34-excerpt.warc.gz", "rb") as fh:
        for rec in ArchiveIterator(fh, parse_http=True, record_types=WarcRecordType.response):
            if "html" in (rec.http_content_type or ""):
                yield target_uri(rec.headers), http_body(rec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readability", type=Path, required=True, help="a clone of github.com/mozilla/readability")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tasks.crawl.warc import _img_pairs_from_html

    by_attr: Counter[str] = Counter()
    captions: dict[str, set[str]] = defaultdict(set)
    n_pages = 0
    for url, body in pages(a.readability):
        n_pages += 1
        for src, text, base, attr in _img_pairs_from_html(body, url, ["alt", "title"]):
            if text and src and not src.startswith("data:"):
                by_attr[attr] += 1
                captions[urljoin(base, src)].add(text)
    per_url = Counter(len(v) for v in captions.values())
    worst = sorted(((len(v), k) for k, v in captions.items()), reverse=True)[:6]
    total = sum(by_attr.values())
    rows = [row(f"captioned <img> URLs from `{attr}`", n, total, "images", "share of all") for attr, n in by_attr.most_common()]
    rows += [row(f"image URLs with {k} distinct captions", n, len(captions), "URLs", "share of all") for k, n in sorted(per_url.items())]
    print(f"{n_pages} real pages; the URLs with the most captions:")
    for n, u in worst:
        print(f"  {n:3d}  {u[:100]}")
    report("alt_text", rows, {"pages": n_pages, "worst": worst})


if __name__ == "__main__":
    main()
