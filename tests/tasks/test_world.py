import bz2
import gzip

from fastwarc.warc import ArchiveIterator, WarcRecordType

from tasks.specs import WorldSpec
from tasks.vocabulary.wikitext import iter_pages
from tasks.world.generate import generate


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    spec = WorldSpec(size="tiny", seed=3, port=9999)
    generate(spec, tmp_path / "a")
    generate(spec, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    generate(WorldSpec(size="tiny", seed=4, port=9999), tmp_path / "c")
    assert _files(tmp_path / "c")[next(iter(a))] != a[next(iter(a))] or len(_files(tmp_path / "c")) != len(a)


def test_world_parses_with_the_pipeline_libraries(tiny_world):
    world, port, _ = tiny_world
    pages = list(iter_pages(str(world / "wiki/enwiki-sample-pages-articles.xml.bz2")))
    assert {p.ns for p in pages} >= {0, 1, 4} and any(p.redirect for p in pages)
    responses = []
    for w in sorted((world / "warc").glob("*.warc.gz")):
        with open(w, "rb") as fh:
            responses += [r.headers["WARC-Target-URI"] for r in ArchiveIterator(fh, record_types=WarcRecordType.response)
                          if r.headers.get("WARC-Target-URI")]
    assert any(u.startswith(f"http://127.0.0.1:{port}/pages/") for u in responses)
    with gzip.open(min((world / "pageviews").glob("*.gz")), "rt") as fh:
        lines = fh.read().splitlines()
    assert sum(len(line.split(" ")) == 4 for line in lines) >= len(lines) - 1  # one malformed line on purpose
    assert bz2.decompress((world / "wiki/enwiki-sample-pages-articles.xml.bz2").read_bytes()).startswith(b"<mediawiki")
