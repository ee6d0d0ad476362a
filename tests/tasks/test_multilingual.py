"""A multilingual build (MetaCLIP 2): one vocabulary per language, each caption matched only
against its own language's vocabulary, and balancing with one t per language derived from the
English tail share. Runs the real stages (vocabulary -> candidates -> match -> balance) on a
small en + zh world written here."""

import bz2
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks import stages as build_stages
from tasks.context import make_context
from tasks.curate.balancing import language_thresholds, p_to_t, t_to_p
from tasks.specs import BalancingSpec, SpecError, load_spec

EN = ("The red flag flies over the square. A red flag and a blue flag. "
      "The blue flag is the flag of the sea. A flag on a pole. ") * 6
ZH = "红色国旗在广场上飘扬。蓝色国旗是大海的国旗。国旗挂在旗杆上。" * 6


def _dump(path, title, text):
    page = f"<page><title>{title}</title><ns>0</ns><id>1</id><revision><text>{text}</text></revision></page>"
    path.write_bytes(bz2.compress(f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{page}</mediawiki>'.encode()))
    return str(path)


# captions: head-heavy in both languages; the second zh caption mixes in an English word and the
# last English one a Chinese word, to show routing by language
CAPTIONS = (
    [("en", f"a red flag on the pole number {i}") for i in range(30)]
    + [("en", f"the blue flag of the sea, picture {i}") for i in range(6)]
    + [("en", "A flag with the word 国旗 written on it")]
    + [("zh", f"红色国旗在广场上飘扬，第{i}张") for i in range(24)]
    + [("zh", f"NBA 球队的蓝色国旗图片{i}") for i in range(5)]
    + [("zh", "挂在旗杆上的国旗")]
)


def _spec(tmp_path, **balancing):
    table = tmp_path / "pairs.jsonl"
    table.write_text("".join(json.dumps({"url": f"http://img.example.com/{k}.jpg", "caption": c}, ensure_ascii=False) + "\n"
                             for k, (_lang, c) in enumerate(CAPTIONS)))
    voc = lambda dump, pv: {"case_sensitive": False, "wikipedia": {"dumps": [dump], "min_unigram_count": 5,
                                                                   "min_bigram_count": 1000, "workers": 1},
                            "pageviews": {"files": []}, "wordnet": {"enabled": False}}
    return load_spec({
        "kind": "build-wit", "name": "multi", "output_dir": str(tmp_path / "build"), "language": ["en", "zh"],
        "vocabularies": {"en": voc(_dump(tmp_path / "en.xml.bz2", "Flag", EN), None),
                         "zh": voc(_dump(tmp_path / "zh.xml.bz2", "国旗", ZH), None)},
        "crawl": {"tables": [{"path": str(table)}], "workers": 1},
        "matching": {"workers": 1},
        "balancing": {"max_pairs_per_query": 10, **balancing},
    })


def test_multilingual_stages_match_each_caption_against_its_language_and_balance_per_language(tmp_path):
    spec = _spec(tmp_path)
    assert spec.crawl.languages == ["en", "zh"] and spec.vocabularies["zh"].language == "zh"
    ctx = make_context(spec, log=lambda *_: None)
    for stage in ("vocabulary", "candidates", "match", "balance"):
        build_stages.run_stage(ctx, stage)
    out = ctx.out

    q = pq.read_table(out / "vocabulary/queries.parquet").to_pylist()
    assert [r["entry_id"] for r in q] == list(range(len(q)))  # still row numbers after the merge
    by_lang = {lang: {r["query"] for r in q if r["language"] == lang} for lang in ("en", "zh")}
    assert {"flag", "red", "blue"} <= by_lang["en"] and {"国旗", "红色", "广场"} <= by_lang["zh"]
    assert (out / "vocabulary/en/queries.parquet").exists() and (out / "vocabulary/zh/queries.parquet").exists()
    stats = json.loads((out / "vocabulary/stats.json").read_text())
    assert set(stats["by_language"]) == {"en", "zh"} and stats["entries"] == len(q)

    lang_of = {r["entry_id"]: r["language"] for r in q}
    query_of = {r["entry_id"]: r["query"] for r in q}
    matched = [r for f in build_stages.match_files(out / "match") for r in pq.read_table(f).to_pylist()]
    assert len(matched) == len(CAPTIONS)
    for r in matched:  # every caption matched only entries of the language ID gave it
        assert {lang_of[e] for e in r["entry_ids"]} == {r["lang"]}, r
    mixed_en = next(r for r in matched if "国旗 written" in r["text"])
    assert mixed_en["lang"] == "en" and "国旗" not in {query_of[e] for e in mixed_en["entry_ids"]}
    mixed_zh = next(r for r in matched if r["text"].startswith("NBA"))
    assert mixed_zh["lang"] == "zh" and {"国旗", "蓝色"} <= {query_of[e] for e in mixed_zh["entry_ids"]}

    # one t per language: English keeps t = 10, zh gets the t at which its tail holds English's tail share
    counts = pq.read_table(out / "match/entry_counts.parquet").to_pydict()
    c = {lang: np.array([n for n, lg in zip(counts["count"], counts["language"]) if lg == lang]) for lang in ("en", "zh")}
    p_en = c["en"][c["en"] < 10].sum() / c["en"].sum()
    zs = np.sort(c["zh"])
    t_zh = int(zs[np.abs(np.cumsum(zs) / zs.sum() - p_en).argmin()])
    bal = build_stages.stage_stats(out, "balance")
    assert bal.t_by_language == {"en": 10, "zh": t_zh}
    assert bal.pairs_by_language["en"].pool == 37 and bal.pairs_by_language["zh"].pool == 30
    assert bal.t_by_language["zh"] != 10  # the rule moved it (zh's counts differ from English's)
    info = build_stages.stage_stats(out, "balance")
    for lang in ("en", "zh"):
        row = info.by_language[lang]
        assert row.t == info.t_by_language[lang]
        assert row.tail_share_at_t == pytest.approx(c[lang][c[lang] < row.t].sum() / c[lang].sum(), abs=1e-4)
        assert row.head_share_after < row.head_share_before  # balancing bit in both languages


def test_the_per_language_t_rule_by_hand():
    counts = np.array([0, 1, 2, 3, 4, 10])  # 20 matches; cumulative shares 0, .05, .15, .30, .50, 1
    assert t_to_p(counts, 4) == pytest.approx(0.30)  # 0 + 1 + 2 + 3 below t = 4
    assert p_to_t(counts, 0.32) == 3 and p_to_t(counts, 0.45) == 4 and p_to_t(counts, 0.9) == 10
    import pyarrow as pa

    table = pa.table({"language": ["en"] * 6 + ["zh"] * 4, "count": [0, 1, 2, 3, 4, 10, 1, 1, 8, 30]})
    # English at t = 4: tail share .30; zh sorted 1, 1, 8, 30 -> shares .025, .05, .25, 1: closest .25 -> t = 8
    assert language_thresholds(table, BalancingSpec(max_pairs_per_query=4)) == {"en": 4, "zh": 8}
    assert language_thresholds(table, BalancingSpec(max_pairs_per_query=4, language_t="same")) == {"en": 4, "zh": 4}
    assert language_thresholds(table, BalancingSpec(max_pairs_per_query=4, t_by_language={"zh": 2})) == {"en": 4, "zh": 2}


def test_multilingual_spec_errors_say_what_to_write():
    base = {"kind": "build-wit", "name": "m", "output_dir": "/tmp/m", "crawl": {"warc": ["a"]}}
    with pytest.raises(SpecError, match="one vocabulary per language"):
        load_spec({**base, "language": ["en", "zh"]})
    with pytest.raises(SpecError, match="must be the build's languages"):
        load_spec({**base, "language": ["en", "zh"], "vocabularies": {"en": {}}})
    with pytest.raises(SpecError, match="not `vocabulary`"):
        load_spec({**base, "vocabularies": {"en": {}, "zh": {}}, "vocabulary": {}})
    s = load_spec({**base, "vocabularies": {"en": {}, "zh": {}}})
    assert list(s.vocabulary_specs()) == ["en", "zh"] and s.crawl.languages == ["en", "zh"]
