"""Labelled sets of real short captions (alt texts, image captions, class names) for language ID.

    python bench/caption_sets.py --readability /path/to/mozilla/readability   # writes bench/data/captions.jsonl

Every text was written by someone outside this project; each row says where it comes from and
why it carries its label. bench/language_id.py reads the file (a clone has it; this script only
rebuilds it). Sources (licences in bench/data/README.md):

  wiki         en  the caption of every [[File:]] link in the real Wikipedia excerpt (tests/data/wiki)
  readability  lang of the page: alt and title texts of every <img> of Mozilla Readability's
                   test pages (real pages of news sites and blogs, saved with their markup), labelled
                   with the page's <html lang>; pages without one are left out
  warc         lang of the page: alt texts of the real Common Crawl excerpt (tests/data/warc)
  laion        lang 400 LAION-400M rows (tests/data/tables; a seeded sample of those 3 to 200
                   characters long) labelled by hand: English unless listed in LAION_FOREIGN (with
                   their language) or LAION_NEUTRAL (mixed languages, URLs, codes: left out). The
                   product titles, slugs and capitals that language ID misreads are among them
  cn_clip      zh  Chinese-CLIP's 1,000 Chinese ImageNet class names and its 80 Chinese prompt
                   templates (each filled with one class name), from the cn_clip package

Reviewed by hand (the page's language is not every alt text's): alt texts that are language-neutral
(names, brands, trackers: NEUTRAL) are left out, English sentences on other languages' pages are
relabelled (RELABEL), LaTeX alt texts of formulas are left out, and texts of Chinese pages with no
Chinese character (user names, English menu items) are not counted as Mandarin.
  issue        zh  three human-written Mandarin captions that lid.176 labels `wuu` (issue #31)
  spacy        lang spaCy's example sentences of 67 languages (bench/data/spacy_example_sentences.json)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT

OUT = ROOT / "bench" / "data" / "captions.jsonl"
ISSUE_MANDARIN = ["一个穿着蓝色衣服的年轻人在冲浪", "几个人在室外的餐馆吃比萨饼", "巨型月饼现身上海"]
LAION_SAMPLE = (31, 400)  # random.Random(31).shuffle of the rows 3-200 characters long; the first 400
LAION_FOREIGN = {80: "no", 92: "it", 104: "id", 113: "es", 114: "fr", 149: "es", 152: "ar", 192: "ca", 232: "fr", 236: "fr",
                 256: "it", 268: "es"}  # indices into the sample
LAION_NEUTRAL = {6, 77, 86, 110, 125, 128, 141, 194, 210, 213, 244, 258, 264, 365, 375, 377, 392}
NEUTRAL = {"Aleš Vávra", "Coufal, Souček, Diop (West Ham - Manchester City)", "Martin Fendrych", "CNET", "twitter-lite", "heise online",
           "heise Mac & i", "Mac & i Twitter", "Mac & i Facebook", "Mac & i Google+", "Mac & i YouTube", "Mac & i Apps", "OS X Yosemite",
           "Avatar lemonde.fr", "Libération", "xiti", "Quantcast", "CNET Japan", "Hovenier",
           # English pages: user names, codes, vendor names, emoticons (no language)
           ":)", "sai", "jnovo22", "TRUSTe", "AFP_UF8X5", "Livefyre", "iPod", "R(M, x)"}
RELABEL = {"Loading": "en", "Russia’s gas weapon, Gazprom, is rapidly losing pressure": "en"}
RELABEL_PREFIX = {"Soccer Football - Brasileiro Championship": "en", "A 3-D plaster model of a coronavirus spike protein": "en"}


def html_alts(data: bytes, attrs=("alt", "title")) -> tuple[str | None, list[str]]:
    """(the page's <html lang>, the non-empty alt/title texts of its <img> tags)."""
    from resiliparse.parse.encoding import detect_encoding
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse_from_bytes(data, detect_encoding(data))
    html = tree.document.query_selector("html")
    lang = (html.getattr("lang", "") or "").strip().lower() if html is not None else ""
    texts = []
    for img in tree.document.query_selector_all("img"):
        for a in attrs:
            t = re.sub(r"\s+", " ", img.getattr(a, "") or "").strip()
            if t and not re.search(r"\.(jpe?g|png|gif|webp)$", t, re.IGNORECASE):  # a file name is not a caption
                texts.append(t)
    return (lang.split("-")[0] or None), list(dict.fromkeys(texts))


def readability_rows(repo: Path) -> list[dict]:
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", "HEAD", "test/test-pages/"], capture_output=True,
                           text=True, check=True).stdout.split()
    rows = []
    for d in names:
        data = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{d}/source.html"], capture_output=True, check=False).stdout
        lang, texts = html_alts(data)
        if lang:
            rows += [{"text": t, "lang": lang, "source": f"readability:{Path(d).name}"} for t in texts]
    return rows


def warc_rows() -> list[dict]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    rows = []
    with open(ROOT / "tests/data/warc/cc-main-2020-34-excerpt.warc.gz", "rb") as fh:
        for rec in ArchiveIterator(fh, parse_http=True, record_types=WarcRecordType.response):
            if "html" not in (rec.http_content_type or "").lower():
                continue
            lang, texts = html_alts(rec.reader.read(), attrs=("alt",))
            if lang:
                rows += [{"text": t, "lang": "zh" if lang.startswith("zh") else lang, "source": "warc:cc-main-2020-34"} for t in texts]
    return rows


def laion_rows() -> list[dict]:
    import random

    import pyarrow.parquet as pq

    t = pq.read_table(ROOT / "tests/data/tables/laion400m-meta-10000.parquet", columns=["TEXT"])["TEXT"].to_pylist()
    idx = [i for i in range(len(t)) if t[i] and 3 <= len(t[i]) <= 200]
    random.Random(LAION_SAMPLE[0]).shuffle(idx)
    sample = sorted(idx[: LAION_SAMPLE[1]])
    return [{"text": t[i], "lang": LAION_FOREIGN.get(k, "en"), "source": f"laion400m:row{i}"}
            for k, i in enumerate(sample) if k not in LAION_NEUTRAL]


def reviewed(rows: list[dict]) -> list[dict]:
    """The hand review: neutral texts out, English on other pages relabelled, formulas out, Chinese
    pages' texts without a Chinese character not counted as Mandarin."""
    out = []
    for r in rows:
        t = r["text"]
        if t in NEUTRAL or "\\" in t or sum(c.isalpha() for c in t) < 2:  # LaTeX of formulas, no words
            continue
        lang = RELABEL.get(t) or next((v for k, v in RELABEL_PREFIX.items() if t.startswith(k)), r["lang"])
        if lang == "zh" and not re.search(r"[\u4e00-\u9fff]", t):
            continue
        out.append({**r, "lang": lang})
    return out


def cn_clip_rows() -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from flows.configs import cn_clip_imagenet

    names, templates = cn_clip_imagenet()
    rows = [{"text": n, "lang": "zh", "source": "cn_clip:imagenet_classnames"} for n in names if n not in NEUTRAL]
    rows += [{"text": t.format(names[(7 * i) % len(names)]), "lang": "zh", "source": "cn_clip:imagenet_templates"}
             for i, t in enumerate(templates)]
    return rows


def spacy_rows() -> list[dict]:
    d = json.loads((ROOT / "bench/data/spacy_example_sentences.json").read_text())["sentences"]
    return [{"text": s, "lang": lang, "source": "spacy:examples"} for lang, ss in d.items() for s in ss]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readability", type=Path, required=True, help="a clone of github.com/mozilla/readability")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from language_id import wiki_captions

    rows = [{"text": c, "lang": "en", "source": "wiki:enwiki-2016-sample"} for c in wiki_captions(ROOT / "tests/data/wiki/enwiki-2016-sample.xml.bz2")]
    rows += reviewed(readability_rows(a.readability) + warc_rows()) + laion_rows() + cn_clip_rows()
    rows += [{"text": t, "lang": "zh", "source": "issue-31:wuu-labelled-mandarin"} for t in ISSUE_MANDARIN] + spacy_rows()
    OUT.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    from collections import Counter

    print(f"{len(rows)} rows -> {OUT}")
    print(Counter(r["lang"] for r in rows).most_common(12))
    print(Counter(r["source"].split(":")[0] for r in rows))


if __name__ == "__main__":
    main()
