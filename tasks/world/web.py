"""The sample world's web: rendered images, HTML pages that point at them, and WARC/WAT captures.

Pages use every URL form a crawl meets (absolute, root-relative, relative, `<base>`), and the
hard cases: `data:` URIs, svg, empty and missing alt, non-English alt, duplicates, private and
link-local hosts, non-http schemes, 404s, non-image bodies, corrupt bytes, a decompression bomb
and `X-Robots-Tag: noai` images. The WARCs are written with warcio, with fixed dates and record
ids so that two generations with the same seed are byte-identical.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tasks.world.concepts import BACKGROUNDS, CAPTION_TEMPLATES, COLOURS, FOREIGN_CAPTIONS, SHAPES, SIZES
from tasks.world.render import encode, png_bomb, render

WARC_DATE = "2024-01-01T00:00:00Z"


@dataclass
class Img:
    path: str  # under www/, e.g. img/00012.jpg
    caption: str
    shape: str = ""
    colour: str = ""


def _zipf_choice(rng: random.Random, items: list[str], s: float) -> str:
    return rng.choices(items, [1 / (k + 1) ** s for k in range(len(items))])[0]


def caption_for(rng: random.Random, shape: str, colour: str, size: str, bg: str) -> str:
    return rng.choice(CAPTION_TEMPLATES).format(shape=shape, colour=colour, size=size, bg=bg)


def render_images(www: Path, rng: random.Random, n: int, px: int) -> list[Img]:
    """Render n training images with a skewed (Zipf) concept distribution."""
    imgs = []
    (www / "img").mkdir(parents=True, exist_ok=True)
    colours = list(COLOURS)
    for i in range(n):
        shape, colour = _zipf_choice(rng, SHAPES, 1.1), _zipf_choice(rng, colours, 1.1)
        size, bg = rng.choice(list(SIZES)), rng.choice(list(BACKGROUNDS))
        fmt = rng.choices(["jpg", "png", "webp"], [0.7, 0.2, 0.1])[0]
        rel = f"img/{i:06d}.{fmt}"
        (www / rel).write_bytes(encode(render(shape, colour, size, bg, rng, px), fmt))
        imgs.append(Img(rel, caption_for(rng, shape, colour, size, bg), shape, colour))
    return imgs


def special_images(www: Path, rng: random.Random, port: int) -> tuple[list[Img], dict[str, dict]]:
    """Images that must never reach a shard, and the server behaviour for each path."""
    serve: dict[str, dict] = {}
    cap = "a photo of the purple crescent on a beige background"  # tail concepts; langid reads it as en
    out = []
    for k in range(2):
        out.append(Img(f"img/missing-{k}.jpg", cap))  # no file: 404
        nonimg = f"img/notimage-{k}.jpg"
        (www / nonimg).write_bytes(b"<html><body>not an image</body></html>")
        serve[nonimg] = {"content_type": "text/html"}
        out.append(Img(nonimg, cap))
        corrupt = f"img/corrupt-{k}.jpg"
        (www / corrupt).write_bytes(b"\xff\xd8\xff\xe0" + rng.randbytes(600))
        out.append(Img(corrupt, cap))
        noai = f"img/noai-{k}.png"
        (www / noai).write_bytes(encode(render("crescent", "purple", "large", "beige", rng), "png"))
        serve[noai] = {"headers": {"X-Robots-Tag": "noai"}}
        out.append(Img(noai, cap))
    (www / "img/empty.jpg").write_bytes(b"")  # a 200 with no body
    out.append(Img("img/empty.jpg", cap))
    (www / "img/bomb.png").write_bytes(png_bomb())
    out.append(Img("img/bomb.png", cap))
    # redirects to addresses the guard refuses: the hop must be stopped before any request
    for k, target in enumerate(("http://127.0.0.2:{port}/img/000000.jpg", "http://169.254.169.254/latest/meta-data/x.jpg")):
        serve[f"img/redirect-{k}.jpg"] = {"redirect": target.format(port=port)}
        out.append(Img(f"img/redirect-{k}.jpg", cap))
    return out, serve


def _img_tag(rng: random.Random, base: str, im: Img, page_has_base: bool) -> str:
    alt = html.escape(im.caption, quote=True)
    attr = rng.choices(["alt", "title", "data-image-title"], [0.8, 0.1, 0.1])[0]
    if page_has_base:
        src = im.path.split("/", 1)[1]  # relative to <base href=".../img/">
    else:
        src = rng.choice([f"{base}/{im.path}", f"/{im.path}", f"../{im.path}"])
    other = ' alt=""' if attr != "alt" else ""
    return f'<img src="{html.escape(src)}" {attr}="{alt}"{other} width="64" height="64">'


def hard_cases(base: str, port: int) -> list[str]:
    """Tags every crawl meets that extraction or safety must drop, with the reason."""
    cap = "a photo of the purple crescent on a beige background"
    return [
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline red circle">',
        f'<img src="{base}/img/logo.svg" alt="a red circle logo">',
        '<img src="javascript:void(0)" alt="a red circle">',
        f'<img src="{base}/img/000000.jpg" alt="">',
        f'<img src="{base}/img/000001.jpg">',
        f'<img src="{base}/img/000002.jpg" alt="  ">',
        f'<img src="http://10.0.0.1/img/x.jpg" alt="{cap}">',
        f'<img src="http://169.254.169.254/latest/meta-data/x.jpg" alt="{cap}">',
        f'<img src="http://127.0.0.2:{port}/img/000003.jpg" alt="{cap}">',
        f'<img src="file:///etc/passwd" alt="{cap}">',
        f'<img src="ftp://127.0.0.1/img/x.jpg" alt="{cap}">',
        f'<img src="{base}/img/000004.jpg" alt="ab">',
        f'<img src="{base}/img/000005.jpg" alt="{FOREIGN_CAPTIONS[0]}">',
    ]


def build_pages(rng: random.Random, base: str, port: int, imgs: list[Img], specials: list[Img],
                per_page: int) -> list[tuple[str, str]]:
    """(url, html) for every page; images are spread over pages, some appear twice."""
    pool = list(imgs)
    rng.shuffle(pool)
    pages = []
    chunks = [pool[i:i + per_page] for i in range(0, len(pool), per_page)]
    for p, chunk in enumerate(chunks):
        has_base = p % 5 == 0
        head = f'<base href="{base}/img/">' if has_base else ""
        tags = [_img_tag(rng, base, im, has_base) for im in chunk]
        if p % 7 == 0 and p > 0:  # exact duplicates of earlier pairs
            tags += [_img_tag(rng, base, im, False) for im in chunks[p - 1][:3]]
        if p % 11 == 0:
            tags.append(f'<img src="{base}/img/{chunk[0].path.split("/")[1]}" alt="{rng.choice(FOREIGN_CAPTIONS)}">')
        if p == 0:
            tags += hard_cases(base, port) + [f'<img src="{base}/{s.path}" alt="{s.caption}">' for s in specials]
        body = "\n".join(f"<figure>{t}<figcaption>figure {i}</figcaption></figure>" for i, t in enumerate(tags))
        doc = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{head}<title>Shapes page {p}</title></head>"
               f"<body><h1>Shapes page {p}</h1>\n{body}\n</body></html>")
        pages.append((f"{base}/pages/p{p:05d}.html", doc))
    return pages


def _record_id(rng: random.Random) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def write_warcs(folder: Path, rng: random.Random, pages: list[tuple[str, str]], n_files: int, prefix: str = "sample") -> list[Path]:
    """Response records (plus request records and a few broken ones), gzip per record."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in range(n_files):
        path = folder / f"{prefix}-{f:05d}.warc.gz"
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=True)
        for i, (url, doc) in enumerate(pages[f::n_files]):
            req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "127.0.0.1")], is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=req,
                                warc_headers_dict={"WARC-Date": WARC_DATE, "WARC-Record-ID": _record_id(rng)}))
            body = doc.encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers,
                                warc_headers_dict={"WARC-Date": WARC_DATE, "WARC-Record-ID": _record_id(rng)}))
            if i == 1:  # a response record whose HTTP block is garbage: counted, skipped
                block = b"\x00\x01 this is not an HTTP response\r\n"
                raw = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}?broken\r\n"
                       f"WARC-Date: {WARC_DATE}\r\nWARC-Record-ID: {_record_id(rng)}\r\n"
                       f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(block)}\r\n\r\n").encode()
                buf.write(gzip.compress(raw + block + b"\r\n\r\n", mtime=0))
        data = buf.getvalue()
        if f == n_files - 1:  # a truncated last record, as an interrupted download leaves it
            data += gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 99999\r\n\r\nHTTP/1.1 200 OK\r\n", mtime=0)[:40]
        path.write_bytes(data)
        out.append(path)
    return out


def write_wat(path: Path, rng: random.Random, pages: list[tuple[str, str]], imgs: list[Img], base: str) -> None:
    """A WAT file (Common Crawl's JSON metadata records) listing IMG links with alt text."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for p, (url, _doc) in enumerate(pages[:3]):
        links = [{"path": "IMG@/src", "url": f"/{im.path}", "alt": im.caption} for im in imgs[p * 5:(p + 1) * 5]]
        links.append({"path": "A@/href", "url": "/pages/other.html", "text": "a link"})
        meta = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": url, "WARC-Type": "response"},
                             "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
                                 "Head": {"Base": f"{base}/"} if p == 0 else {}, "Links": links}}}}}
        payload = json.dumps(meta, sort_keys=True).encode()
        writer.write_record(writer.create_warc_record(url, "metadata", payload=io.BytesIO(payload), warc_content_type="application/json",
                            warc_headers_dict={"WARC-Date": WARC_DATE, "WARC-Record-ID": _record_id(rng)}))
    path.write_bytes(buf.getvalue())
