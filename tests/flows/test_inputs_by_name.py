"""Inputs named instead of listed (tasks/inputs.py), against a mirror laid out like
dumps.wikimedia.org and data.commoncrawl.org, served on loopback: a dump by wiki and date, its
multistream parts and indexes from dumpstatus.json, pageviews by day (one hour missing), a crawl
by id; the manifest lists every file read."""

import bz2
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tasks.specs import SpecError, load_spec
from tests.conftest import REPO
from tests.tasks.test_vocabulary import _multistream

CRAWL = "CC-MAIN-2020-34"


def _write_mirror(world: Path, root: Path) -> dict:
    """The tiny world's wiki as a two-part multistream dump of enwiki 20240601 (plus a failed
    20240501), its pageviews as the 24 hours of 2024-01-01 but hour 13, its WARCs as a crawl."""
    xml = bz2.decompress((world / "wiki/enwiki-sample-pages-articles.xml.bz2").read_bytes()).decode()
    first, last = xml.index("<page>"), xml.rindex("</page>") + len("</page>")
    pages = [p + "</page>" for p in xml[first:last].split("</page>") if p.strip()]
    half = len(pages) // 2
    day = root / "enwiki/20240601"
    day.mkdir(parents=True)
    files = {}
    for n, chunk in ((1, pages[:half]), (2, pages[half:])):
        tmp = root / f"tmp{n}"
        tmp.mkdir()
        dump, index = _multistream(xml[:first] + "".join(chunk) + xml[last:], tmp, pages_per_stream=5)
        for src, name in ((dump, f"enwiki-20240601-pages-articles-multistream{n}.xml-p{n}p{n * 100}.bz2"),
                          (index, f"enwiki-20240601-pages-articles-multistream-index{n}.txt-p{n}p{n * 100}.bz2")):
            shutil.move(src, day / name)
            data = (day / name).read_bytes()
            files[name] = {"size": len(data), "url": f"/enwiki/20240601/{name}", "sha1": hashlib.sha1(data).hexdigest(),
                           "md5": hashlib.md5(data).hexdigest()}
        tmp.rmdir()
    status = {"version": "0.8", "jobs": {"articlesmultistreamdump": {"status": "done", "updated": "2024-06-03 10:00:00", "files": files},
                                         "metacurrentdump": {"status": "done", "updated": "2024-06-03 10:00:00", "files": {}}}}
    (day / "dumpstatus.json").write_text(json.dumps(status))
    failed = root / "enwiki/20240501"
    failed.mkdir(parents=True)
    status["jobs"]["articlesmultistreamdump"]["status"] = "failed"
    (failed / "dumpstatus.json").write_text(json.dumps(status))
    running = root / "enwiki/20240701"  # the newest dump is still being written, as the public site's often is
    running.mkdir(parents=True)
    status["jobs"]["articlesmultistreamdump"]["status"] = "in-progress"
    (running / "dumpstatus.json").write_text(json.dumps(status))
    hours = sorted((world / "pageviews").glob("*.gz"))
    pv = root / "other/pageviews/2024/2024-01"
    pv.mkdir(parents=True)
    for h in range(24):
        if h != 13:  # a missing hour, as the public archive has them
            shutil.copy(hours[h % len(hours)], pv / f"pageviews-20240101-{h:02d}0000.gz")
    seg = root / f"crawl-data/{CRAWL}/segments/1/warc"
    seg.mkdir(parents=True)
    listing = []
    for w in sorted((world / "warc").glob("*.warc.gz")):
        shutil.copy(w, seg / w.name)
        listing.append(f"crawl-data/{CRAWL}/segments/1/warc/{w.name}")
    (root / f"crawl-data/{CRAWL}/warc.paths.gz").write_bytes(gzip.compress(("\n".join(listing) + "\n").encode()))
    return files


class RangeHandler(SimpleHTTPRequestHandler):
    """A static server with byte ranges, as dumps.wikimedia.org and every mirror (nginx) serve them:
    the stages read a multistream part as ranges of it."""

    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not rng.startswith("bytes=") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        a, _, b = rng.removeprefix("bytes=").partition("-")
        start, end = int(a or 0), min(int(b) if b else size - 1, size - 1)
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        import io

        return io.BytesIO(data)


@pytest.fixture(scope="module")
def mirror(tiny_world, tmp_path_factory):
    world, port, _ = tiny_world
    root = tmp_path_factory.mktemp("mirror")
    files = _write_mirror(world, root)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}", files, port
    srv.shutdown()


def _named(spec: dict, dumps: str, cc: str, date: str = "20240601") -> dict:
    wp = spec["vocabulary"]["wikipedia"]
    wp.pop("dumps", None)
    wp.update(wiki="enwiki", dump_date=date, dumps_base_url=dumps, workers=1, streams_per_part=2)
    spec["vocabulary"]["pageviews"].update(dates=["2024-01-01"], base_url=dumps)
    spec["vocabulary"]["pageviews"].pop("days", None)
    spec["vocabulary"]["pageviews"].pop("date_range", None)
    spec["crawl"].update(crawl_id=CRAWL, cc_base_url=cc, max_warc_files=None)
    return spec


@pytest.mark.parametrize("base", ["http", "file", "folder"])
def test_wit_400m_resolves_its_inputs_from_names(mirror, tmp_path, base):
    """The wit-400m spec as shipped names its inputs; pointed at a mirror (a server, file://, a
    folder) it resolves every part with its index, 24 hours of each day, and the crawl's files."""
    from tasks.context import make_context

    root, url, files, _ = mirror
    where = {"http": url, "file": f"file://{root}", "folder": str(root)}[base]
    shipped = yaml.safe_load((REPO / "data_specs/wit-400m.yaml").read_text())
    assert shipped["vocabulary"]["wikipedia"]["wiki"] == "enwiki" and shipped["crawl"]["crawl_id"]
    assert shipped["vocabulary"]["pageviews"]["days"] == 26  # MetaCLIP's 26 days
    spec = load_spec(_named(shipped, where, where))
    ctx = make_context(spec, tmp_path / "b", log=lambda *_: None)
    parts = sorted({d.split("#")[0] for d in ctx.dumps})
    assert [p.rsplit("/", 1)[1] for p in parts] == sorted(n for n in files if "index" not in n)
    assert len(ctx.dumps) > 2 and all("#bytes=" in d for d in ctx.dumps)  # split by their indexes
    assert len(ctx.pageviews) == 24 and ctx.pageviews[13].endswith("pageviews-20240101-130000.gz")
    assert [w.rsplit("/", 1)[1] for w in ctx.warcs] == ["sample-00000.warc.gz", "sample-00001.warc.gz"]
    wiki = [i for i in ctx.inputs if i["source"] in ("wikipedia", "wikipedia_index")]
    assert {i["url"].rsplit("/", 1)[1]: i["sha1"] for i in wiki} == {n: m["sha1"] for n, m in files.items()}
    assert sum(i["source"] == "pageviews" for i in ctx.inputs) == 24
    assert sum(i["source"] == "common_crawl" for i in ctx.inputs) == 2


def test_a_failed_dump_and_a_wrong_crawl_id_are_refused_with_the_fix(mirror, tmp_path):
    from tasks.context import make_context

    _, url, _, _ = mirror
    spec = load_spec(_named(yaml.safe_load((REPO / "data_specs/wit-400m.yaml").read_text()), url, url, date="20240501"))
    with pytest.raises(SpecError, match="status is 'failed'.*dump_date"):
        make_context(spec, tmp_path / "b", log=lambda *_: None)
    spec = load_spec(_named(yaml.safe_load((REPO / "data_specs/wit-400m.yaml").read_text()), url, url, date="20230101"))
    with pytest.raises(SpecError, match="no dump status"):
        make_context(spec, tmp_path / "b", log=lambda *_: None)


def test_pageview_days_are_drawn_with_the_seed():
    from tasks.inputs import pageview_days

    a = pageview_days(26, ["2018-01-01", "2023-12-31"], [], seed=0)
    assert len(set(a)) == 26 and a == sorted(a) and a == pageview_days(26, ["2018-01-01", "2023-12-31"], [], seed=0)
    assert a != pageview_days(26, ["2018-01-01", "2023-12-31"], [], seed=1)
    with pytest.raises(SpecError):
        pageview_days(5, ["2024-01-01", "2024-01-03"], [], seed=0)


@pytest.mark.slow
def test_a_build_from_names_lists_its_inputs_in_the_manifest(mirror, tmp_path):
    """`openwit build` with named inputs on the loopback mirror: it builds, the missing pageview
    hour is counted (not fatal), and the manifest cites every file it read."""
    _root, url, files, _port = mirror
    spec = {"kind": "build-wit", "name": "named", "output_dir": str(tmp_path / "b"),
            "vocabulary": {"wikipedia": {"min_unigram_count": 5, "min_bigram_count": 5, "min_pmi": 3.0},
                           "pageviews": {"min_title_views": 50}, "wordnet": {"path": "/usr/share/wordnet"}},
            "crawl": {"languages": ["en"]},
            "balancing": {"max_pairs_per_query": 100},
            "download": {"image_size": 32, "processes": 1, "threads": 8, "retries": 0, "timeout": 5,
                         "allow_networks": ["127.0.0.1/32"]},
            "tokenizer_vocab_size": 300}
    spec = _named(spec, url, url)
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, OPENWIT_STATE=str(tmp_path / "state"))
    env.pop("PREFECT_API_URL", None)
    p = subprocess.run([str(Path(sys.executable).parent / "openwit"), "build", str(f)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    m = json.loads((tmp_path / "b/manifest.json").read_text())
    assert m["totals"]["rows"] > 300
    by_url = {i["url"]: i for i in m["inputs"]}
    for name, meta in files.items():
        assert by_url[f"{url}/enwiki/20240601/{name}"]["sha1"] == meta["sha1"]
    assert sum(i["source"] == "pageviews" for i in m["inputs"]) == 24
    assert sum(i["source"] == "common_crawl" for i in m["inputs"]) == 2
    card = (tmp_path / "b/datacard.md").read_text()
    assert "| vocabulary | missing_pageview_file | 1 |" in card


@pytest.mark.parametrize("base", ["http", "folder"])
def test_dump_date_latest_takes_the_newest_finished_dump_and_the_manifest_says_which(mirror, tmp_path, base):
    """`dump_date: latest` (the shipped wit-400m spec's) lists the wiki's dump dates, skips the
    newest one still running, and resolves the newest finished one; `openwit resolve` prints it."""
    from tasks.context import make_context

    root, url, _files, _port = mirror
    spec = _named(yaml.safe_load((REPO / "data_specs/wit-400m.yaml").read_text()), url if base == "http" else str(root), url,
                  date="latest")
    spec["vocabulary"]["wordnet"]["enabled"] = False
    ctx = make_context(load_spec(spec), tmp_path / "b", log=lambda *_: None)
    assert ctx.resolved == {"dump_date": "20240601"} and all("/20240601/" in d for d in ctx.dumps)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    r = subprocess.run([str(Path(sys.executable).parent / "openwit"), "resolve", str(spec_file)], cwd=REPO, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["resolved"] == {"dump_date": "20240601"} and any(i["url"].endswith(".bz2") for i in out["inputs"])


def test_validate_is_offline_and_every_shipped_spec_passes(monkeypatch, capsys):
    """`openwit validate` checks schema, local files and columns without fetching anything: every
    spec in data_specs/ passes here with every fetch refused (a named dump, pageview days, a crawl id
    stay unresolved until `--resolve` or the build)."""
    from flows import cli
    from tasks import inputs

    def no_fetch(*a, **k):
        raise AssertionError(f"validate fetched {a[:1]}")

    monkeypatch.setattr(inputs, "read_bytes", no_fetch)
    if not (REPO / "examples/own-images/images").exists():  # own-images.yaml reads the README example's images
        import subprocess
        import sys

        subprocess.run([sys.executable, str(REPO / "docs/example_images.py"), str(REPO / "examples/own-images")], check=True,
                       capture_output=True)
    specs = sorted(str(p.relative_to(REPO)) for p in (REPO / "data_specs").rglob("*.yaml"))
    assert cli.main(["validate", *specs]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == len(specs) and "wit-400m.yaml: ok (build-wit wit-400m); named inputs not resolved" in out
