"""The Chinese rules (MetaCLIP 2's for a language without spaces): counting by segmentation,
bigrams joined without a space, one script (Simplified) for counting and matching, substring
matching with CJK punctuation as separators, and zh alt texts of a real crawl through that path."""

import bz2

import pyarrow.parquet as pq
import pytest

from tasks.curate.matching import build_automaton, match_text
from tasks.specs import (
    BuildSpec,
    PageviewsSpec,
    SpecError,
    VocabularySpec,
    WikipediaSpec,
    WordNetSpec,
    load_spec,
)
from tasks.vocabulary.build import build_vocabulary
from tasks.vocabulary.counting import zh_tokens
from tests.conftest import real

# written for this project; the second article is in Traditional script
ARTICLES = {
    "国旗": "国旗是一个国家的象征。红色国旗在广场上飘扬，红色国旗很美。每个国家都有国旗，国旗代表国家。" * 4,
    "紅旗": "紅色國旗在廣場上飄揚。國家的國旗是紅色國旗。" * 4,
    "微信": "微信是一种通讯服务。很多人使用微信服务。" * 3,
}


def _dump(path):
    pages = "".join(f"<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><text>{x}</text></revision></page>"
                    for i, (t, x) in enumerate(ARTICLES.items(), 1))
    path.write_bytes(bz2.compress(f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{pages}</mediawiki>'.encode()))
    return str(path)


def test_segmentation_splits_words_and_punctuation_separates():
    assert zh_tokens("红色国旗在广场上飘扬。") == ["红色", "国旗", "在", "广场", "上", "飘扬", "。"]
    assert zh_tokens("紅色國旗") == ["红色", "国旗"]  # Traditional is counted as Simplified


def test_zh_vocabulary_counts_segmented_words_and_joins_bigrams(tmp_path):
    import gzip

    pv = tmp_path / "pageviews-20240101-000000.gz"
    pv.write_bytes(gzip.compress("zh 国旗 500 0\nzh 紅旗 300 0\nzh 微信 90 0\nen 国旗 999 0\n".encode()))
    spec = VocabularySpec(language="zh", wikipedia=WikipediaSpec(min_unigram_count=8, min_bigram_count=8, min_pmi=0.0),
                          pageviews=PageviewsSpec(projects=["zh"], min_title_views=100), wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "v", [_dump(tmp_path / "zhwiki.xml.bz2")], [str(pv)], progress=lambda *_: None)
    q = {r["query"]: r for r in pq.read_table(tmp_path / "v/queries.parquet").to_pylist()}
    # 国旗: 4 x 5 in the first article + 4 x 3 in the second (國旗 converted): 32
    assert q["国旗"]["unigram_count"] == 32 and "國旗" not in q
    assert q["红色"]["unigram_count"] == 4 * 2 + 4 * 2  # 紅色 converted, counted with 红色
    assert q["红色国旗"]["sources"] == ["wikipedia_bigram"] and q["红色国旗"]["bigram_count"] == 16  # joined, no space
    assert not any(" " in k for k in q)
    assert "wikipedia_title" in q["红旗"]["sources"]  # the title 紅旗, as Simplified
    assert "微信" not in q  # 6 occurrences < 8 and 90 views < 100
    assert not any(k in ("。", "，") for k in q)  # punctuation is never an entry


def test_unigram_cap_keeps_the_most_frequent_share(tmp_path):
    spec = VocabularySpec(language="zh", wikipedia=WikipediaSpec(min_unigram_count=1, min_bigram_count=10_000, unigram_top_share=0.1),
                          wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "v", [_dump(tmp_path / "d.xml.bz2")], [], progress=lambda *_: None)
    t = pq.read_table(tmp_path / "v/queries.parquet").to_pylist()
    uni = [r for r in t if "wikipedia_unigram" in r["sources"]]
    assert 0 < len(uni) < 10 and "国旗" in {r["query"] for r in uni}


def test_bigram_cap_is_a_share_of_the_unigrams_kept(tmp_path):
    counts = {}
    for share in (None, 0.4):
        spec = VocabularySpec(language="zh", wikipedia=WikipediaSpec(min_unigram_count=4, min_bigram_count=2, min_pmi=0.0,
                                                                     bigram_share_of_unigrams=share), wordnet=WordNetSpec(enabled=False))
        build_vocabulary(spec, tmp_path / f"v{share}", [_dump(tmp_path / "d.xml.bz2")], [], progress=lambda *_: None)
        t = pq.read_table(tmp_path / f"v{share}/queries.parquet").to_pylist()
        counts[share] = (sum("wikipedia_unigram" in r["sources"] for r in t), [r for r in t if "wikipedia_bigram" in r["sources"]])
    n_uni, capped = counts[0.4]
    assert len(counts[None][1]) > len(capped) == int(n_uni * 0.4) > 0
    best = sorted(counts[None][1], key=lambda r: (-r["npmi"], r["query"]))[: len(capped)]
    assert {r["query"] for r in capped} == {r["query"] for r in best}  # the highest-ranked ones stay


def test_matching_without_word_boundaries():
    entries = ["国旗", "红色国旗", "NBA", "中山", "服务"]
    auto = build_automaton(entries, language="zh")

    def m(text):
        return {entries[i] for i in match_text(auto, text, True, "zh")}

    assert m("中华人民共和国国旗") == {"国旗"}  # a plain substring
    assert m("紅色國旗飄揚") == {"国旗", "红色国旗"}  # Traditional caption, Simplified entries
    assert m("NBA，篮球") == {"NBA"} and m("看 NBA 比赛") == {"NBA"}
    assert m("SNBA球队") == set()  # a Latin entry still needs its boundaries (MetaCLIP 2 pads non-CJK sides)
    assert m("用心专注，服务专业") == {"服务"} and m("红色，国旗") == {"国旗"}  # punctuation separates: no 红色国旗
    # English keeps the space rule
    en = build_automaton(["red", "red circle"])
    assert {["red", "red circle"][i] for i in match_text(en, "a red circle")} == {"red", "red circle"}
    assert match_text(en, "redcircle") == []


def test_language_zh_sets_the_vocabulary_and_crawl_languages():
    s = load_spec({"kind": "build-wit", "name": "zh", "output_dir": "/tmp/x", "language": "zh", "crawl": {"warc": ["a.warc.gz"]}})
    assert s.vocabulary.language == "zh" and s.crawl.languages == ["zh"]
    s = BuildSpec(name="x", output_dir="/tmp/x", language="zh", crawl={"warc": ["a"], "languages": ["zh", "en"]})
    assert s.crawl.languages == ["zh", "en"]  # what the spec says wins
    with pytest.raises(SpecError, match="ja"):
        load_spec({"kind": "build-wit", "name": "ja", "output_dir": "/tmp/x", "language": "ja", "crawl": {"warc": ["a"]}})


def test_real_crawl_zh_alt_texts_come_through_the_zh_path():
    """The Common Crawl excerpt's Chinese pages: language ID keeps their alt texts as zh, and the
    zh rules match them against a Chinese vocabulary."""
    from tasks.crawl.warc import iter_warc
    from tasks.engine import Stats
    from tasks.specs import CrawlSpec

    path = real("warc/cc-main-2020-34-excerpt.warc.gz")
    rows = list(iter_warc(str(path), CrawlSpec(warc=["x"], languages=["zh"], attributes=["alt"], min_text_chars=1), Stats()))
    texts = [r["text"] for r in rows]
    assert len(texts) >= 10 and all(r["lang"] == "zh" for r in rows)
    assert {"微信二维码", "用心专注，服务专业"} <= set(texts)
    entries = ["微信", "服务", "中山", "二维码"]
    auto = build_automaton(entries, language="zh")
    hits = {entries[i] for t in texts for i in match_text(auto, t, True, "zh")}
    assert hits == set(entries)


def test_language_id_tells_short_chinese_from_short_japanese():
    """lid.176 confuses the two on a few characters; script decides where it can: Japanese writes
    kana, Chinese never does (bench/language_id.py measures the rule on short real captions)."""
    from tasks.crawl.langid import detect_lang

    assert detect_lang("微信二维码") == detect_lang("国旗") == detect_lang("用心专注，服务专业") == "zh"
    assert detect_lang("紅色國旗") == detect_lang("蓝色圆环") == detect_lang("菱形，紫色") == "zh"  # lid.176 alone: zh, en, sr
    assert detect_lang("波鲁斯坦の国旗") == "ja"  # lid.176 alone says zh
    assert detect_lang("歩道を走") == "ja"  # lid.176 alone says en
    assert detect_lang("a red flag on a pole") == "en" and detect_lang("東京タワーの写真") == "ja"


def test_chinese_wordnet_from_an_open_multilingual_wordnet_file(tmp_path):
    """`wordnet.path` at Open Multilingual Wordnet's data (NLTK's omw-1.4 layout): each synset's
    first Chinese lemma becomes an entry, as English takes each synset's first lemma."""
    folder = tmp_path / "omw-1.4" / "cmn"
    folder.mkdir(parents=True)
    (folder / "wn-data-cmn.tab").write_text(
        "# Chinese Open Wordnet\tcmn\thttp://compling.hss.ntu.edu.sg/cow/\tCC BY 4.0\n"
        "02084071-n\tcmn:lemma\t狗\n02084071-n\tcmn:lemma\t犬\n"  # dog: the first lemma is the head
        "03355925-n\tcmn:lemma\t國旗\n"  # flag, written in Traditional script
        "00001740-a\tcmn:lemma\t能\n", encoding="utf-8")
    spec = VocabularySpec(language="zh", wikipedia=WikipediaSpec(min_unigram_count=10_000, min_bigram_count=10_000),
                          wordnet=WordNetSpec(path=str(tmp_path)))
    stats = build_vocabulary(spec, tmp_path / "v", [_dump(tmp_path / "d.xml.bz2")], [], progress=lambda *_: None)
    q = {r["query"]: r["sources"] for r in pq.read_table(tmp_path / "v/queries.parquet").to_pylist()}
    assert q == {"狗": ["wordnet"], "国旗": ["wordnet"], "能": ["wordnet"]} and stats.wordnet_synsets == 3


def test_a_chinese_build_without_a_chinese_wordnet_says_how_to_fix_it(tmp_path):
    from tasks.context import make_context

    table = tmp_path / "t.jsonl"
    table.write_text('{"url": "http://a.example/1.jpg", "caption": "国旗"}\n')
    spec = BuildSpec(name="zh", output_dir=str(tmp_path / "b"), language="zh", crawl={"tables": [{"path": str(table)}]},
                     vocabulary={"wordnet": {"path": str(tmp_path)}})
    with pytest.raises(SpecError, match=r"wn-data-cmn.tab.*wordnet.enabled: false"):
        make_context(spec, log=lambda *_: None)
