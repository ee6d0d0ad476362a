"""Generate the sample world deterministically from a seed, and cache it.

    python -m tasks.world.generate --size tiny --seed 0 --port 8765 --out /tmp/world

Layout of a world folder:
    wiki/enwiki-sample-pages-articles.xml.bz2   MediaWiki export
    pageviews/pageviews-20240101-HH0000.gz      hourly pageview files
    warc/sample-NNNNN.warc.gz, wat/sample.wat.gz  crawl captures of the pages under www/
    www/                                         what the loopback server serves (+ _serve.json)
    eval/shape/<class>/*.png, eval/colour/...    held-out zero-shot suites (ImageFolder)
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

from tasks.specs import WorldSpec, state_dir
from tasks.world import web, wiki
from tasks.world.concepts import BACKGROUNDS, COLOURS, SHAPES, SIZES
from tasks.world.render import encode, render

SIZES_PRESET = {
    # images, wiki paragraphs per article, WARC files, images per page, eval images per class
    "default": dict(images=30_000, paragraphs=40, warcs=4, per_page=40, eval_per_class=60, px=64),
    "tiny": dict(images=400, paragraphs=12, warcs=2, per_page=25, eval_per_class=6, px=64),
}
WORLD_VERSION = 3  # 2: redirect specials, 3: an empty body


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
    pages_counts = wiki.write_dump(out / "wiki" / "enwiki-sample-pages-articles.xml.bz2", rng, preset["paragraphs"])
    wiki.write_pageviews(out / "pageviews", rng)
    www = out / "www"
    imgs = web.render_images(www, rng, preset["images"], preset["px"])
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
    _eval_suites(out, rng, preset["eval_per_class"], preset["px"])
    summary = {
        "version": WORLD_VERSION, "size": spec.size, "seed": spec.seed, "base_url": base,
        "images": len(imgs), "special_images": len(specials), "pages": len(pages), "wiki": pages_counts,
        "shapes": SHAPES, "colours": list(COLOURS),
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
    tmp = out.with_name(out.name + ".tmp")
    summary = generate(spec, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
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

