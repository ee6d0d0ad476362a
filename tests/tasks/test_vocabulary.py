import bz2
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest

from tasks.engine import Stats
from tasks.specs import PageviewsSpec, VocabularySpec, WikiApiSpec, WikipediaSpec, WordNetSpec
from tasks.vocabulary.build import build_vocabulary
from tasks.vocabulary.text_rules import tokens
from tasks.vocabulary.wikitext import iter_article_texts, wikitext_to_text
from tasks.vocabulary.wordnet import synset_head_names
from tasks.world.concepts import POISON
from tests.conftest import real

PAGE = """<page><title>{t}</title><ns>{ns}</ns><id>1</id>{r}<revision><text>{x}</text></revision></page>"""


def _dump(path, pages):
    xml = "<mediawiki xmlns=\"http://www.mediawiki.org/xml/export-0.10/\">" + "".join(
        PAGE.format(t=t, ns=ns, r='<redirect title="X"/>' if red else "", x=x) for t, ns, red, x in pages) + "</mediawiki>"
    path.write_bytes(bz2.compress(xml.encode()))
    return str(path)


def test_wikitext_cleaning_keeps_labels_drops_markup():
    t = wikitext_to_text("{{Infobox|a=b}}The [[Red circle|red circles]] and [[Blue]]<ref>cite</ref>."
                         "[[File:X.png|thumb|a [[caption]] here]][[Category:Shapes]]\n{| class=x\n| cell\n|}<!-- c -->")
    assert tokens(t) == ["The", "red", "circles", "and", "Blue", "."]


def test_hand_counts_are_exact_and_skips_redirects_and_namespaces(tmp_path):
    dump = _dump(tmp_path / "d.xml.bz2", [
        ("Circle", 0, False, "red circle, red circle. blue square"),
        ("Square", 0, False, "red circle red"),
        ("Circles", 0, True, "#REDIRECT [[Circle]] red red red"),
        ("Talk:Circle", 1, False, "red red red red"),
    ])
    pv = tmp_path / "pageviews-20240101-000000.gz"
    pv.write_bytes(gzip.compress(b"en Circle 80 0\nen Square 10 0\nen Talk:Circle 999 0\nen.m Square 500 0\nen Main_Page 900 0\n"))
    spec = VocabularySpec(wikipedia=WikipediaSpec(min_unigram_count=2, min_bigram_count=2, min_pmi=0.0, partitions=3, spill_items=3),
                          pageviews=PageviewsSpec(min_title_views=70), wordnet=WordNetSpec(enabled=False))
    stats = build_vocabulary(spec, tmp_path / "voc", [dump], [str(pv)], progress=lambda *_: None)
    q = {r["query"]: r for r in pq.read_table(tmp_path / "voc/queries.parquet").to_pylist()}
    # tokens: red circle , red circle . blue square | red circle red  -> red 4, circle 3
    assert q["red"]["unigram_count"] == 4 and q["circle"]["unigram_count"] == 3
    assert "blue" not in q and "square" not in q  # count 1 < 2
    assert q["red circle"]["bigram_count"] == 3  # bigrams never span punctuation
    assert q["Circle"]["title_views"] == 80 and q["Circle"]["sources"] == ["wikipedia_title"]
    assert "Main Page" not in q and "Square" not in q  # not in the dump / below threshold (en.m is another project)
    assert stats.dropped["redirect_page"] == 1 and stats.dropped["other_namespace"] == 1 and stats.rows_in == 4
    part = json.loads((tmp_path / "voc/stats.json").read_text())["parts"]["0000-d.xml.bz2"]
    assert part["dropped"] == {"other_namespace": 1, "redirect_page": 1} and part["counts"]["articles"] == 2
    assert [r["entry_id"] for r in pq.read_table(tmp_path / "voc/queries.parquet").to_pylist()] == list(range(len(q)))


def test_rerun_reuses_finished_parts(tmp_path):
    dump = _dump(tmp_path / "d.xml.bz2", [("A", 0, False, "x y x y")])
    spec = VocabularySpec(wikipedia=WikipediaSpec(min_unigram_count=1, min_bigram_count=1, min_pmi=-99), wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "v", [dump], [], progress=lambda *_: None)
    (tmp_path / "d.xml.bz2").unlink()  # a cached part must not be read again
    build_vocabulary(spec, tmp_path / "v", [dump], [], progress=lambda *_: None)
    assert (tmp_path / "v/queries.parquet").exists()


def test_sample_world_vocabulary_has_no_markup_words(tiny_world, tmp_path):
    world, _port, _ = tiny_world
    spec = VocabularySpec(wikipedia=WikipediaSpec(min_unigram_count=1, min_bigram_count=5, min_pmi=3.0), wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "v", [str(world / "wiki/enwiki-sample-pages-articles.xml.bz2")], [], progress=lambda *_: None)
    queries = set(pq.read_table(tmp_path / "v/queries.parquet")["query"].to_pylist())
    assert not queries & set(POISON.values())
    assert {"circle", "red", "regular polygon"} <= queries


def test_real_wikipedia_excerpt():
    path = real("wiki/enwiki-2016-sample.xml.bz2")
    stats = Stats()
    texts = list(iter_article_texts(str(path), stats))
    assert stats.rows_in == stats.dropped["redirect_page"] + stats.counts["articles"] + stats.dropped["other_namespace"] == 206
    assert stats.dropped["redirect_page"] >= 99 and stats.counts["articles"] == 106
    leftovers = [t for _, t in texts if "{{" in t or "[[File:" in t]
    assert len(leftovers) <= len(texts) // 20  # unbalanced markup in real pages may survive


def test_wordnet_30_head_names():
    pytest.importorskip("pathlib")
    from pathlib import Path

    if not Path("/usr/share/wordnet/data.noun").exists():
        pytest.skip("wordnet-base not installed")
    names, synsets = synset_head_names("/usr/share/wordnet")
    assert synsets == 117659  # WordNet 3.0
    assert abs(len(names) - 86654) < 200 and "dog" in names and "ice cream" in names


class FakeMediaWiki(BaseHTTPRequestHandler):
    calls: ClassVar[list] = []

    def do_GET(self):  # http.server's name
        q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        FakeMediaWiki.calls.append((q, self.headers.get("User-Agent")))
        if len(FakeMediaWiki.calls) == 1:  # the first request is rate limited
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        if q.get("list") == "categorymembers":
            body = {"query": {"categorymembers": [{"pageid": 2, "ns": 0, "title": "Hexagon"}, {"pageid": 3, "ns": 14, "title": "Category:Sub"}]}}
        elif q.get("list") == "random":
            body = {"query": {"random": [{"id": 4, "ns": 0, "title": "Ring"}]}}
        else:
            t = q.get("titles", "")
            body = {"query": {"pages": {"1": {"pageid": 1, "ns": 0, "title": t, "extract": f"The {t.lower()} is a red shape. Red {t.lower()}."}}}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_wikipedia_api_source_with_429(tmp_path):
    from tasks.vocabulary.wiki_api import fetch_articles

    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeMediaWiki)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        api = WikiApiSpec(titles=["Circle"], category="Shapes", random=1, max_articles=5,
                          api_url=f"http://127.0.0.1:{srv.server_port}/w/api.php", requests_per_second=50, user_agent="openwit-test/0.1 (tests)")
        stats = Stats()
        got = dict(fetch_articles(api, stats))
    finally:
        srv.shutdown()
    assert set(got) == {"Circle", "Hexagon", "Ring"} and "red shape" in got["Circle"]
    assert FakeMediaWiki.calls[0][1].startswith("openwit-test/0.1 (tests)")
    assert stats.counts["articles"] == 3


def _multistream(xml: str, out: Path, pages_per_stream: int) -> tuple[Path, Path]:
    """Re-pack an export the way Wikimedia does: a header stream, streams of N pages, a footer
    stream, and an index of `offset:page_id:title` lines."""
    first, last = xml.index("<page>"), xml.rindex("</page>") + len("</page>")
    pages = [p + "</page>" for p in xml[first:last].split("</page>") if p.strip()]
    dump, index = out / "multistream.xml.bz2", out / "multistream-index.txt.bz2"
    lines, off = [], 0
    with open(dump, "wb") as f:
        for k, chunk in enumerate([xml[:first]] + ["".join(pages[i:i + pages_per_stream]) for i in range(0, len(pages), pages_per_stream)]
                                  + [xml[last:]]):
            data = bz2.compress(chunk.encode())
            if 0 < k <= -(-len(pages) // pages_per_stream):
                for j in range(min(pages_per_stream, len(pages) - (k - 1) * pages_per_stream)):
                    lines.append(f"{off}:{(k - 1) * pages_per_stream + j + 1}:title")
            f.write(data)
            off += len(data)
    index.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    return dump, index


def test_multistream_ranges_count_exactly_like_the_whole_file(tiny_world, tmp_path):
    from tasks.vocabulary.wikitext import multistream_ranges

    world, _port, _ = tiny_world
    xml = bz2.decompress((world / "wiki/enwiki-sample-pages-articles.xml.bz2").read_bytes()).decode()
    dump, index = _multistream(xml, tmp_path, pages_per_stream=7)
    ranges = multistream_ranges(str(index), streams_per_part=3)
    assert len(ranges) >= 3 and ranges[-1][1] is None and ranges[0][0] > 0  # the header stream is skipped
    whole_stats = Stats()
    whole = list(iter_article_texts(str(dump), whole_stats))
    parts, part_stats = [], Stats()
    for a, b in ranges:
        parts += list(iter_article_texts(f"{dump}#bytes={a}-{'' if b is None else b}", part_stats))
    assert parts == whole and part_stats == whole_stats  # every page once, in order, skips counted the same

    spec = VocabularySpec(wikipedia=WikipediaSpec(min_unigram_count=1, min_bigram_count=2, min_pmi=1.0), wordnet=WordNetSpec(enabled=False))
    build_vocabulary(spec, tmp_path / "a", [str(dump)], [], progress=lambda *_: None)
    split = [f"{dump}#bytes={a}-{'' if b is None else b}" for a, b in ranges]
    build_vocabulary(spec, tmp_path / "b", split, [], progress=lambda *_: None)
    ta, tb = (pq.read_table(tmp_path / d / "queries.parquet") for d in ("a", "b"))
    assert ta.num_rows > 20 and ta.equals(tb)

    from tasks.context import make_context
    from tasks.specs import BuildSpec, SpecError, load_spec

    raw = {"kind": "build-wit", "name": "ms", "output_dir": str(tmp_path / "out"),
           "vocabulary": {"wikipedia": {"dumps": [str(dump)], "multistream_index": {str(dump): str(index)}, "streams_per_part": 3}},
           "crawl": {"warc": [str(dump)]}}
    ctx = make_context(load_spec(raw, BuildSpec), log=lambda *_: None)
    assert ctx.dumps == split  # the build counts the ranges as parts
    raw["vocabulary"]["wikipedia"]["multistream_index"] = {str(tmp_path / "other.xml.bz2"): str(index)}
    with pytest.raises(SpecError, match="is not one of the dumps"):
        make_context(load_spec(raw, BuildSpec), log=lambda *_: None)


def test_popular_titles_in_parallel_sum_every_hour_and_count_what_was_skipped(tmp_path):
    """Pageview hours are counted one per job and merged by partition: the same sums as one
    in-memory count, a missing hour counted not fatal, and a rerun reads no hour again."""
    import random

    from tasks.vocabulary.pageviews import popular_titles, title_views

    rng = random.Random(0)
    files = []
    for h in range(5):
        lines = [f"en T{rng.randint(0, 300)} {rng.randint(1, 40)} 0" for _ in range(2000)]
        lines += ["en Talk:X 5 0", "broken line", f"de T{h} 1000 0"]
        files.append(tmp_path / f"pageviews-20240101-{h:02d}0000.gz")
        files[-1].write_bytes(gzip.compress("\n".join(lines).encode()))
    names = [str(f) for f in files] + [str(tmp_path / "pageviews-20240101-050000.gz")]  # an hour that is missing
    want = {t: v for t, v in title_views(names, ["en"]).items() if v >= 300}
    stats = Stats()
    got = popular_titles(names, ["en"], 300, tmp_path / "pv", partitions=4, workers=2, stats=stats)
    assert got == want and len(got) > 10
    assert stats.dropped["missing_pageview_file"] == 1 and stats.counts["pageview_files"] == 5
    assert stats.dropped["malformed_pageview_line"] == 5 and stats.dropped["namespace_title"] == 5
    for f in files:
        f.unlink()  # counted hours are cached units
    assert popular_titles(names, ["en"], 300, tmp_path / "pv", partitions=4) == want


def test_partition_merge_folds_spills_in_batches_with_the_same_sums(tmp_path, monkeypatch):
    """merge_partition sums spills as it reads them (memory: the partition's distinct keys, not
    every spill of every part); the sums and the min-count cut are those of one big group-by."""
    import random
    from collections import Counter

    from tasks.vocabulary import counting

    rng = random.Random(1)
    want: Counter[str] = Counter()
    folders = []
    for part in range(6):
        for n in range(3):
            c = Counter(f"w{rng.randint(0, 400)}" for _ in range(500))
            counting.spill_counts(c, tmp_path / f"part{part}", "u", 1, n)
            want.update(c)
        folders.append(tmp_path / f"part{part}")
    monkeypatch.setattr(counting, "MERGE_BATCH_ROWS", 300)
    got = counting.merge_partition(folders, "u", 0, min_count=20)
    assert dict(zip(got["key"].to_pylist(), got["count"].to_pylist())) == {k: v for k, v in want.items() if v >= 20}
