"""Synthetic build-wit inputs of any size for bench/scale.py, consistent with each other.

One unit (size 1) is about the sample world's size; size s is s units:
  dump       1,500 articles per unit (about 6.5 MB of XML), Wikimedia's multistream layout: bz2
             streams of 100 pages after a header stream, an `offset:id:title` index, one dump
             file per 10 units (as enwiki comes in parts). Text is English words (WordNet's
             lemmas) drawn from a Zipf law, with collocations (two-word phrases) so bigrams have
             real PMI, and wiki markup the cleaner must remove.
  pageviews  4 hourly files per unit of 10,000 lines each (a bigger build reads more hours, as
             MetaCLIP's 624; an hour stays the same size): the dump's titles with Zipf views,
             titles that are not articles, other projects and namespaces.
  crawl      one WARC per unit: 1,500 pages of 20 <img> tags each (30,000 pairs), alt text of
             Zipf words (the 3,000 most frequent) that names one of the 1,500 most popular
             articles a tenth of the time, on 300 hosts per unit
             (Zipf over hosts), 2% of pairs repeated from the previous file, 3% empty alt text.
  images     one small JPEG for every URL from a loopback server (`serve_images`), since the
             synthetic hosts all resolve to 127.0.0.1 in the bench.

Inputs are generated in parallel processes and cached by size and format version.
"""

from __future__ import annotations

import bz2
import datetime
import gzip
import io
import json
import random
import threading
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import get_context
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

VERSION = 3
PAGES_PER_UNIT = 1500
WORDS_PER_PAGE = 400
IMGS_PER_PAGE = 20
HOSTS_PER_UNIT = 300
PV_FILES_PER_UNIT, PV_LINES_PER_FILE = 4, 10_000  # more hours as the build grows, each hour the same size (as Wikimedia's)
UNITS_PER_DUMP = 10
PAGES_PER_STREAM = 100
N_PHRASES = 3000
CAPTION_WORDS = 3000  # alt text draws from the head of the lexicon, so balancing bites
WORDNET = Path("/usr/share/wordnet")


def lexicon(seed: int = 0) -> list[str]:
    """English single-word lemmas of WordNet 3.0, in a seeded random order (the Zipf ranks)."""
    words: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        f = WORDNET / f"index.{pos}"
        if not f.exists():
            raise SystemExit(f"{f} is missing: install Debian's wordnet-base (make install does)")
        for line in f.read_text(errors="replace").splitlines():
            if line and not line.startswith(" "):
                w = line.split(" ", 1)[0]
                if w.isalpha() and w.isascii() and 3 <= len(w) <= 12:
                    words.add(w)
    out = sorted(words)
    random.Random(seed).shuffle(out)
    return out


def zipf_ids(rng: np.random.Generator, n: int, size: int, a: float = 1.1) -> np.ndarray:
    return (rng.zipf(a, size) - 1) % n


def titles_of(unit: int, lex: list[str]) -> list[str]:
    """The article titles of one unit: two capitalised words, unique by construction (the unit
    and the page number pick the words)."""
    n = len(lex)
    return [f"{lex[(unit * PAGES_PER_UNIT + i) % n].capitalize()} {lex[(7919 * (unit * PAGES_PER_UNIT + i) + 13) % n]}"
            for i in range(PAGES_PER_UNIT)]


def phrases(lex: list[str]) -> list[str]:
    rng = random.Random(1)
    return [f"{rng.choice(lex[2000:])} {rng.choice(lex[2000:])}" for _ in range(N_PHRASES)]


def _page_xml(title: str, pid: int, text: str) -> str:
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>0</ns>\n    <id>{pid}</id>\n    <revision>\n"
            f"      <id>{pid * 10}</id>\n      <timestamp>2024-01-01T00:00:00Z</timestamp>\n      <model>wikitext</model>\n"
            f"      <format>text/x-wiki</format>\n      <text bytes=\"{len(text)}\" xml:space=\"preserve\">{escape(text)}</text>\n"
            f"    </revision>\n  </page>\n")


def _article(rng: np.random.Generator, lex: list[str], phr: list[str], title: str, all_titles: list[str]) -> str:
    ids = zipf_ids(rng, len(lex), WORDS_PER_PAGE)
    words = [lex[i] for i in ids]
    for k in range(0, WORDS_PER_PAGE, 25):  # a collocation per 25 words, a link, some markup
        words[k] = phr[int(zipf_ids(rng, N_PHRASES, 1, 1.3)[0])]
    words[5] = f"[[{all_titles[int(rng.integers(len(all_titles)))]}]]"
    words[50] = "{{cite web|url=http://example.org|title=ignored template}}"
    return f"'''{title}''' is " + " ".join(words[:200]) + ".\n\n== History ==\n" + " ".join(words[200:]) + ".\n"


def write_dump(path: Path, units: list[int], lex: list[str], seed: int) -> dict:
    """One multistream dump file holding the articles of `units`, and its index."""
    from tasks.world.wiki import HEADER

    phr = phrases(lex)
    rng = np.random.default_rng([seed, units[0]])
    titles = [t for u in units for t in titles_of(u, lex)]
    index, off, xml_bytes = [], 0, 0
    with open(path, "wb") as f:
        head = bz2.compress(HEADER.encode())
        f.write(head)
        off += len(head)
        for s in range(0, len(titles), PAGES_PER_STREAM):
            chunk = "".join(_page_xml(t, units[0] * PAGES_PER_UNIT + s + i + 1, _article(rng, lex, phr, t, titles))
                            for i, t in enumerate(titles[s:s + PAGES_PER_STREAM]))
            data = bz2.compress(chunk.encode(), 1)
            xml_bytes += len(chunk.encode())
            index += [f"{off}:{units[0] * PAGES_PER_UNIT + s + i + 1}:{t}" for i, t in enumerate(titles[s:s + PAGES_PER_STREAM])]
            f.write(data)
            off += len(data)
        f.write(bz2.compress(b"</mediawiki>\n"))
    idx = path.with_name(path.name.replace(".xml.bz2", "-index.txt.bz2"))
    idx.write_bytes(bz2.compress(("\n".join(index) + "\n").encode(), 1))
    return {"dump": str(path), "index": str(idx), "xml_bytes": xml_bytes, "pages": len(titles)}


def write_pageviews(folder: Path, size: int, lex: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 99])
    titles = [t for u in range(size) for t in titles_of(u, lex)]
    out = []
    for h in range(PV_FILES_PER_UNIT * size):
        n = PV_LINES_PER_FILE
        ids = zipf_ids(rng, len(titles), n, 1.05)
        views = rng.integers(1, 40, n)
        lines = [f"en {titles[i].replace(' ', '_')} {v} 0" for i, v in zip(ids.tolist(), views.tolist())]
        lines += [f"en Not_an_article_{i} 3 0" for i in range(n // 20)]
        lines += [f"de {titles[i].replace(' ', '_')} 5 0" for i in ids[: n // 10].tolist()]
        lines += ["en Talk:Something 500 0", "broken line"]
        day = datetime.date(2024, 1, 1) + datetime.timedelta(days=h // 24)
        p = folder / f"pageviews-{day:%Y%m%d}-{h % 24:02d}0000.gz"
        with open(p, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(("\n".join(lines) + "\n").encode())
        out.append(str(p))
    return out


def _pairs(unit: int, size: int, lex: list[str], seed: int, port: int) -> list[tuple[str, str]]:
    """The (image URL, alt text) pairs of one unit's pages."""
    rng = np.random.default_rng([seed, 7, unit])
    titles = titles_of(0, lex)  # the popular articles: alt text names them in a Zipf law
    n = PAGES_PER_UNIT * IMGS_PER_PAGE
    hosts = zipf_ids(rng, HOSTS_PER_UNIT * size, n, 1.2)
    lens = rng.integers(2, 11, n)
    words = zipf_ids(rng, CAPTION_WORDS, int(lens.sum()))
    has_title = rng.random(n) < 0.1
    empty = rng.random(n) < 0.03
    out, k = [], 0
    for i in range(n):
        w = [lex[j] for j in words[k:k + lens[i]].tolist()]
        k += int(lens[i])
        if has_title[i]:
            w.insert(int(rng.integers(len(w) + 1)), titles[int(zipf_ids(rng, len(titles), 1, 1.2)[0])])
        alt = "" if empty[i] else " ".join(w)
        out.append((f"http://h{int(hosts[i])}.scale.test:{port}/i/{unit}-{i}.jpg", alt))
    return out


def write_warc(path: Path, unit: int, size: int, lex: list[str], seed: int, port: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pairs = _pairs(unit, size, lex, seed, port)
    if unit:  # 2% of pairs repeat the previous file's (the same image and alt text on another page)
        prev = _pairs(unit - 1, size, lex, seed, port)
        n_dup = len(pairs) // 50
        pairs[-n_dup:] = prev[:n_dup]
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for p in range(PAGES_PER_UNIT):
        imgs = "\n".join(f'<p><img src="{u}" alt="{escape(a, {chr(34): "&quot;"})}" width="300"></p>'
                         for u, a in pairs[p * IMGS_PER_PAGE:(p + 1) * IMGS_PER_PAGE])
        body = f"<!doctype html><html><head><title>page {unit}-{p}</title></head><body><h1>Page</h1>\n{imgs}\n</body></html>".encode()
        url = f"http://site{(unit * 31 + p) % 997}.scale.test/page/{unit}/{p}.html"
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
                                   protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers,
                                                      warc_headers_dict={"WARC-Date": "2024-01-01T00:00:00Z"}))
    path.write_bytes(buf.getvalue())
    return len(pairs)


def _dump_job(path: str, units: list[int], seed: int) -> dict:
    return write_dump(Path(path), units, lexicon(seed), seed)


def _warc_job(path: str, unit: int, size: int, seed: int, port: int) -> int:
    return write_warc(Path(path), unit, size, lexicon(seed), seed, port)


def ensure_inputs(size: int, folder: Path, workers: int, port: int, log=print, seed: int = 0) -> dict:
    """Generate (or reuse) the inputs of `size` units in `folder`; returns the build spec and a summary."""
    done = folder / "inputs.json"
    if done.exists() and (cached := json.loads(done.read_text())).get("version") == VERSION and cached.get("port") == port:
        return cached
    import shutil
    import time

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "wiki").mkdir(parents=True)
    (folder / "pageviews").mkdir()
    (folder / "warc").mkdir()
    t0 = time.perf_counter()
    lex = lexicon(seed)
    groups = [list(range(a, min(size, a + UNITS_PER_DUMP))) for a in range(0, size, UNITS_PER_DUMP)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        dumps = [pool.submit(_dump_job, str(folder / "wiki" / f"enwiki-scale-p{k:03d}.xml.bz2"), g, seed) for k, g in enumerate(groups)]
        warcs = [pool.submit(_warc_job, str(folder / "warc" / f"scale-{u:05d}.warc.gz"), u, size, seed, port) for u in range(size)]
        pageviews = write_pageviews(folder / "pageviews", size, lex, seed)
        dumps = [d.result() for d in dumps]
        pairs = sum(w.result() for w in warcs)
    summary = {"units": size, "dump_xml_mb": sum(d["xml_bytes"] for d in dumps) / 1e6, "articles": sum(d["pages"] for d in dumps),
               "dump_files": len(dumps), "dump_bz2_mb": sum(Path(d["dump"]).stat().st_size for d in dumps) / 1e6,
               "pageview_lines": PV_FILES_PER_UNIT * PV_LINES_PER_FILE * size,
               "pageview_files": PV_FILES_PER_UNIT * size, "warc_files": size, "img_tags": pairs,
               "warc_mb": sum(f.stat().st_size for f in (folder / "warc").glob("*.gz")) / 1e6, "hosts": HOSTS_PER_UNIT * size,
               "generate_s": round(time.perf_counter() - t0, 1)}
    spec = {
        "kind": "build-wit", "name": f"scale-x{size}", "description": "bench/scale.py synthetic build",
        "vocabulary": {
            "case_sensitive": True,
            "wikipedia": {"dumps": [d["dump"] for d in dumps], "multistream_index": {d["dump"]: d["index"] for d in dumps},
                          "streams_per_part": 20, "min_unigram_count": 100, "min_bigram_count": 30, "min_pmi": 4.907,
                          "max_bigrams": 100_646, "workers": workers, "partitions": 16},
            "pageviews": {"files": pageviews, "min_title_views": 70},
            "wordnet": {"path": str(WORDNET)},
        },
        "crawl": {"warc": [str(folder / "warc" / "*.warc.gz")], "languages": ["en"], "workers": workers},
        "matching": {"workers": workers},
        "balancing": {"max_pairs_per_query": 10, "seed": 0},
        "download": {"image_size": 32, "processes": workers, "threads": 32, "retries": 0, "timeout": 5,
                     "number_sample_per_shard": 5000, "allow_networks": ["127.0.0.0/8"], "webdataset": True},
        "tokenizer_vocab_size": 4096,
    }
    out = {"version": VERSION, "port": port, "summary": summary, "spec": spec}
    done.write_text(json.dumps(out, indent=1))
    log(f"x{size}: inputs generated in {summary['generate_s']}s: {summary['dump_xml_mb']:.0f} MB of dump XML, "
        f"{summary['img_tags']:,} img tags in {size} WARCs, {summary['pageview_lines']:,} pageview lines")
    return out


_JPEG: bytes | None = None


class _ImageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(_JPEG)))
        self.end_headers()
        self.wfile.write(_JPEG)

    def log_message(self, *args):
        pass


def serve_images(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A loopback server answering every GET with one 48x48 JPEG (the image hosts of the bench)."""
    global _JPEG
    from PIL import Image

    b = io.BytesIO()
    Image.new("RGB", (48, 48), (200, 30, 30)).save(b, "JPEG", quality=85)
    _JPEG = b.getvalue()
    srv = ThreadingHTTPServer((host, port), _ImageHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
