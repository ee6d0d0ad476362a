"""Generate the sample world deterministically from a seed, and cache it.

    python -m tasks.world.generate --size tiny --seed 0 --port 8765 --out /tmp/world

Two worlds share the layout: `default` is the long-tailed world of made-up countries and their
flags (tasks/world/longtail.py: 240 concepts whose web frequency follows Zipf's law, so
balancing has a head to flatten and a tail to save); `tiny` is a small world of coloured shapes
for tests (tasks/world/concepts.py).

Layout of a world folder:
    wiki/enwiki-sample-pages-articles.xml.bz2   MediaWiki export
    wiki/zhwiki-sample-pages-articles.xml.bz2   default: the Chinese wiki (tasks/world/zh.py)
    pageviews/pageviews-20240101-HH0000.gz      hourly pageview files (default: `en` and `zh` projects)
    warc/sample-NNNNN.warc.gz, wat/sample.wat.gz  crawl captures of the pages under www/
    warc-zh/sample-zh-NNNNN.warc.gz              default: captures of the Chinese pages (www/zh/pages/)
    www/                                         what the loopback server serves (+ _serve.json)
    eval/concepts/<country>/*.png                default: the class-uniform zero-shot suite (ImageFolder)
    eval/concepts-train/<country>/*.png          default: its linear-probe train split
    eval/concepts-groups.json                    default: head and tail classes by web frequency
    eval/concepts-frequency.json                 default: each country's rank, web count and flag
    eval/concepts-zh-names.json, concepts-groups-zh.json, retrieval-zh.parquet   default: the same, in Chinese
    eval/shape/<class>/*.png, eval/colour/...    tiny: held-out zero-shot suites (ImageFolder)
    eval/retrieval.parquet                       held-out image-caption pairs
    world.json                                   counts and parameters; written last
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.engine import atomic
from tasks.specs import WorldSpec, state_dir
from tasks.world import longtail, web, wiki, zh
from tasks.world.concepts import BACKGROUNDS, COLOURS, SHAPES, SIZES
from tasks.world.render import encode, render

SIZES_PRESET = {
    # style, images, wiki paragraphs per (top) article, WARC files, images per page, eval images per class
    "default": {"style": "flags", "images": 30_000, "paragraphs": 12, "warcs": 4, "per_page": 40, "eval_per_class": 20, "px": 64},
    "tiny": {"style": "shapes", "images": 400, "paragraphs": 12, "warcs": 2, "per_page": 25, "eval_per_class": 6, "px": 64},
}
WORLD_VERSION = 5  # 2: redirect specials, 3: an empty body, 4: the long-tailed world of flags, 5: its Chinese part


def world_dir(spec: WorldSpec, root: Path | None = None) -> Path:
    root = root or state_dir() / "worlds"
    return root / f"{spec.size}-s{spec.seed}-{spec.host}-{spec.port}"


def base_url(spec: WorldSpec) -> str:
    return f"http://{spec.host}:{spec.port}"


def _eval_suites(out: Path, rng: random.Random, per_class: int, px: int) -> None:
    for task, classes in (("shape", SHAPES), ("colour", list(COLOURS))):
        for cls in classes:
            d = out / "eval" / task / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                shape = cls if task == "shape" else rng.choice(SHAPES)
                colour = cls if task == "colour" else rng.choice(list(COLOURS))
                img = render(shape, colour, rng.choice(list(SIZES)), rng.choice(list(BACKGROUNDS)), rng, px)
                (d / f"{k:04d}.png").write_bytes(encode(img, "png"))
    rows = {"image": [], "captions": []}
    for _ in range(per_class * 5):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        size, bg = rng.choice(list(SIZES)), rng.choice(list(BACKGROUNDS))
        rows["image"].append(encode(render(shape, colour, size, bg, rng, px), "png"))
        rows["captions"].append([f"a {colour} {shape}", f"a {size} {colour} {shape} on a {bg} background"])
    pq.write_table(pa.table(rows), out / "eval" / "retrieval.parquet")


def generate(spec: WorldSpec, out: Path) -> dict:
    """Write the world into `out` (replacing what is there) and return its summary."""
    preset = SIZES_PRESET[spec.size]
    rng = random.Random(f"openwit-world-{spec.seed}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base = base_url(spec)
    www = out / "www"
    dump = out / "wiki" / "enwiki-sample-pages-articles.xml.bz2"
    if preset["style"] == "flags":
        world = longtail.concepts(spec.seed)
        titles, paragraphs = longtail.wiki_titles(world, preset["paragraphs"])
        pages_counts = wiki.write_dump(dump, rng, paragraphs, longtail.FlagArticleWriter(rng, world), titles)
        # the Chinese part has its own generator: the English files do not change with it
        zrng = random.Random(f"openwit-world-zh-{spec.seed}")
        zh_names = zh.names(world, spec.seed)
        zh_titles, zh_paragraphs = zh.wiki_titles(world, zh_names, preset["paragraphs"], zrng)
        zh_counts = wiki.write_dump(out / "wiki" / "zhwiki-sample-pages-articles.xml.bz2", zrng, zh_paragraphs,
                                    zh.ZhArticleWriter.flags(zrng, world, zh_names), zh_titles, language="zh")
        wiki.write_pageviews(out / "pageviews", rng, titles=titles, floor=20,  # every country a popular title
                             more_lines=zh.pageview_lines(zh_titles, zrng))
        imgs, freq = longtail.render_web(www, rng, world, preset["images"], preset["px"])
        zh_pages = zh.build_pages(zrng, base_url(spec), zh.captions(imgs, zh_names, zrng), preset["per_page"])
        for url, doc in zh_pages:
            p = www / url.removeprefix(base_url(spec) + "/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(doc)
        web.write_warcs(out / "warc-zh", zrng, zh_pages, 2, prefix="sample-zh")
        about = {"concepts": len(world), "zipf_s": longtail.ZIPF_S,
                 "noise": {k: sum(1 for im in imgs if im.kind == k) for k in longtail.KINDS},
                 "zh": {"wiki": zh_counts, "pages": len(zh_pages)}}
    else:
        pages_counts = wiki.write_dump(dump, rng, preset["paragraphs"])
        wiki.write_pageviews(out / "pageviews", rng, more_lines=zh.pageview_lines(zh.tiny_titles(), random.Random(f"openwit-pv-zh-{spec.seed}")))
        imgs = web.render_images(www, rng, preset["images"], preset["px"])
        (out / "eval").mkdir(parents=True, exist_ok=True)
        zh_part = zh.tiny_part(out, random.Random(f"openwit-world-zh-{spec.seed}"), base, imgs, preset["per_page"], preset["paragraphs"] // 2)
        about = {"shapes": SHAPES, "colours": list(COLOURS), "zh": zh_part}
    specials, serve = web.special_images(www, rng, spec.port)
    pages = web.build_pages(rng, base, spec.port, imgs, specials, preset["per_page"])
    for url, doc in pages:
        p = www / url.removeprefix(base + "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(doc)
    (www / "_serve.json").write_text(json.dumps(serve, indent=1, sort_keys=True))
    web.write_warcs(out / "warc", rng, pages, preset["warcs"])
    (out / "wat").mkdir()
    web.write_wat(out / "wat" / "sample.wat.gz", rng, pages, imgs, base)
    if preset["style"] == "flags":
        longtail.write_suites(out, rng, world, freq, preset["eval_per_class"], preset["px"])
        zh.write_suites(out, zrng, world, zh_names, longtail.groups(world, freq), preset["px"])
    else:
        _eval_suites(out, rng, preset["eval_per_class"], preset["px"])
    summary = {
        "version": WORLD_VERSION, "size": spec.size, "seed": spec.seed, "base_url": base, "style": preset["style"],
        "images": len(imgs), "special_images": len(specials), "pages": len(pages), "wiki": pages_counts, **about,
    }
    (out / "world.json").write_text(json.dumps(summary, indent=1, sort_keys=True))  # completion marker
    return summary


def ensure_world(spec: WorldSpec, root: Path | None = None, log=print) -> Path:
    """The cached world for `spec`, generated on first use (`world.json` marks it complete)."""
    out = world_dir(spec, root)
    marker = out / "world.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == WORLD_VERSION:
        return out
    t0 = time.time()
    log(f"generating the sample world ({spec.size}, seed {spec.seed}) into {out} ...")
    with atomic(out) as tmp:
        summary = generate(spec, tmp)
        if out.exists():
            shutil.rmtree(out)
    log(f"sample world ready: {summary['images']} images, {summary['pages']} pages in {time.time() - t0:.0f}s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="default", choices=list(SIZES_PRESET))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    spec = WorldSpec(size=a.size, seed=a.seed, host=a.host, port=a.port)
    print(ensure_world(spec) if a.out is None else generate(spec, a.out))


if __name__ == "__main__":
    main()

