"""The long-tailed sample world (`world.size: default`): its frequency law, its class-uniform
suites, its determinism, and that every country reaches the query vocabulary."""

import io
import itertools
import json
import math
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.specs import PageviewsSpec, VocabularySpec, WikipediaSpec, WordNetSpec, WorldSpec
from tasks.world import longtail
from tasks.world.generate import SIZES_PRESET, generate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("longtail") / "world"
    summary = generate(WorldSpec(size="default", seed=0, port=9998), out)
    return out, summary


def _slope(counts: list[int]) -> float:
    """Least-squares slope of log(count) against log(rank)."""
    x = np.log(np.arange(1, len(counts) + 1))
    y = np.log(np.asarray(counts, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def test_web_frequency_follows_zipfs_law_with_a_steep_head(world):
    out, summary = world
    freq = json.loads((out / "eval/concepts-frequency.json").read_text())
    assert len(freq) == summary["concepts"] == longtail.N_CONCEPTS >= 200
    counts = sorted((v["count"] for v in freq.values()), reverse=True)
    # the fit over the ranks with enough captions to measure (the last ranks have ~10: noise)
    assert -longtail.ZIPF_S - 0.15 < _slope(counts[:120]) < -longtail.ZIPF_S + 0.15
    assert sum(counts[:24]) / sum(counts) > 0.6  # the 10% most frequent countries hold most captions
    assert counts[-1] >= 1 and counts[0] > 100 * counts[-1]
    # the world's rank is the web's order, up to sampling noise
    by_rank = [v["count"] for v in sorted(freq.values(), key=lambda v: v["rank"])]
    assert _slope(by_rank[:120]) == pytest.approx(_slope(counts[:120]), abs=0.1)
    # and the crawl noise is there: boilerplate, other languages, pairs, near-duplicates
    noise = summary["noise"]
    assert sum(noise.values()) == summary["images"] == SIZES_PRESET["default"]["images"]
    assert all(noise[k] > 0.02 * summary["images"] for k in ("boilerplate", "foreign", "pair", "near_duplicate"))


def test_suites_are_class_uniform_and_split_by_web_frequency(world):
    out, _ = world
    names = {c.name for c in longtail.concepts(0)}
    per_class = SIZES_PRESET["default"]["eval_per_class"]
    for split, n in (("concepts", per_class), ("concepts-train", per_class // 2)):
        folders = {d.name: len(list(d.glob("*.png"))) for d in (out / "eval" / split).iterdir()}
        assert set(folders) == names and set(folders.values()) == {n}
    groups = json.loads((out / "eval/concepts-groups.json").read_text())
    freq = json.loads((out / "eval/concepts-frequency.json").read_text())
    head, tail = groups["head"], groups["tail"]
    assert len(head) == 24 and len(tail) == 120 and not set(head) & set(tail)
    assert min(freq[c]["count"] for c in head) >= max(freq[c]["count"] for c in tail)
    t = pq.read_table(out / "eval/retrieval.parquet")
    assert t.num_rows == len(names) and all(len(c) == 2 for c in t["captions"].to_pylist())
    img = Image.open(io.BytesIO(t["image"][0].as_py()))
    assert img.size == (64, 64)


def test_every_country_reaches_the_vocabulary_as_a_title(world, tmp_path):
    """The wiki, the pageviews and the web agree: each country is a popular title of the dump,
    so its captions can match; its lead sentence describes its flag."""
    from tasks.vocabulary.build import build_vocabulary

    out, _ = world
    spec = VocabularySpec(wikipedia=WikipediaSpec(min_unigram_count=100, min_bigram_count=30, min_pmi=3.0),
                          pageviews=PageviewsSpec(min_title_views=50), wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "v", [str(out / "wiki/enwiki-sample-pages-articles.xml.bz2")],
                     sorted(str(p) for p in (out / "pageviews").glob("*.gz")), progress=lambda *_: None)
    q = {r["query"]: r for r in pq.read_table(tmp_path / "v/queries.parquet").to_pylist()}
    world_ = longtail.concepts(0)
    assert all("wikipedia_title" in q[c.name]["sources"] for c in world_)
    assert "flag" in q and "national flag" in q


def test_world_is_deterministic_for_a_seed(tmp_path):
    a, b, c = longtail.concepts(0), longtail.concepts(0), longtail.concepts(1)
    assert a == b and [x.name for x in a] != [x.name for x in c]
    flags = {(x.orientation, *x.colours, x.emblem) for x in a}
    assert len(flags) == len(a)  # every country its own flag
    assert all(sum(p != q for p, q in zip((x.orientation, *x.colours, x.emblem), (y.orientation, *y.colours, y.emblem))) >= 2
               for i, x in enumerate(a) for y in a[i + 1:])  # no two flags one attribute apart
    runs = []
    for d in ("r1", "r2"):
        imgs, freq = longtail.render_web(tmp_path / d, random.Random("s"), a, 300, 32)
        runs.append(([(i.path, i.caption, i.kind, (tmp_path / d / i.path).read_bytes()) for i in imgs], freq))
    assert runs[0] == runs[1]


def test_zipf_weights_are_a_distribution():
    w = longtail.zipf_weights(240, 1.1)
    assert math.isclose(sum(w), 1.0) and all(a > b for a, b in itertools.pairwise(w))
    assert w[0] / w[9] == pytest.approx(10 ** 1.1)


# ----------------------------------------------------------------------------- the Chinese part
def test_chinese_names_are_unique_and_never_inside_one_another():
    import opencc

    from tasks.vocabulary.text_rules import to_simplified
    from tasks.world import zh

    names = list(zh.names(longtail.concepts(0), 0).values())
    assert len(set(names)) == longtail.N_CONCEPTS
    assert not [(a, b) for a in names for b in names if a != b and a in b]  # substring matching cannot confuse two countries
    s2t = opencc.OpenCC("s2t")
    assert all(to_simplified(s2t.convert(n)) == n for n in names)  # a Traditional caption finds its country
    assert zh.names(longtail.concepts(0), 0) == zh.names(longtail.concepts(0), 0)


def test_chinese_pages_caption_the_same_images_naming_the_same_countries(world):
    """Read through the candidates extractor, as the zh build reads them: every Chinese alt text
    that names countries names the ones the English alt text of the same image names."""
    import re

    from tasks.crawl.warc import iter_warc
    from tasks.engine import Stats
    from tasks.specs import CrawlSpec
    from tasks.vocabulary.text_rules import to_simplified
    from tasks.world import zh

    out, _ = world
    concepts = longtail.concepts(0)
    zh_of = zh.names(concepts, 0)
    spec = CrawlSpec(warc=["x"], languages=["any"], min_text_chars=1)
    rows = lambda folder: [r for w in sorted((out / folder).glob("*.warc.gz")) for r in iter_warc(str(w), spec, Stats())]
    en_re = re.compile(r"\b(" + "|".join(sorted(zh_of, key=len, reverse=True)) + r")\b")
    en: dict[str, set[str]] = {}  # image -> the countries its English alt texts name (an image may appear twice)
    for r in rows("warc"):
        en.setdefault(r["url"].rsplit("/", 1)[-1], set()).update(en_re.findall(r["text"]))
    zh_rows = rows("warc-zh")
    assert len(zh_rows) > 25_000
    langs = {}
    zh_re = re.compile("|".join(sorted(zh_of.values(), key=len, reverse=True)))
    checked = 0
    for r in zh_rows:
        langs[r["lang"]] = langs.get(r["lang"], 0) + 1
        named = set(zh_re.findall(to_simplified(r["text"])))
        if named and r["lang"] == "zh":
            assert named == {zh_of[n] for n in en[r["url"].rsplit("/", 1)[-1]]}, r
            checked += 1
    assert checked > 20_000
    assert langs["zh"] > 0.9 * len(zh_rows) and langs.get("ja", 0) > 100 and langs.get("en", 0) > 100  # the noise LID removes
    trad = sum(1 for r in zh_rows if r["lang"] == "zh" and to_simplified(r["text"]) != r["text"])
    assert 0.10 < trad / langs["zh"] < 0.20  # TRADITIONAL_SHARE of the alt texts


def test_every_country_reaches_the_chinese_vocabulary_as_a_title(world, tmp_path):
    from tasks.vocabulary.build import build_vocabulary
    from tasks.world import zh

    out, _ = world
    spec = VocabularySpec(language="zh", wikipedia=WikipediaSpec(min_unigram_count=100, min_bigram_count=30, min_pmi=3.0),
                          pageviews=PageviewsSpec(projects=["zh"], min_title_views=50), wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "v", [str(out / "wiki/zhwiki-sample-pages-articles.xml.bz2")],
                     sorted(str(p) for p in (out / "pageviews").glob("*.gz")), progress=lambda *_: None)
    q = {r["query"]: r for r in pq.read_table(tmp_path / "v/queries.parquet").to_pylist()}
    names = zh.names(longtail.concepts(0), 0).values()
    assert all("wikipedia_title" in q[n]["sources"] for n in names)  # Traditional titles included, as Simplified
    assert not any(" " in k for k in q) and "国旗" in q
    assert sum(1 for n in names if n not in q) == 0
    groups = json.loads((out / "eval/concepts-groups-zh.json").read_text())
    assert len(groups["head"]) == 24 and len(groups["tail"]) == 120 and set(groups["tail"]) <= set(names)
