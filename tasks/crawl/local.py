"""Candidates from your own images with captions on disk: no network, no web server.

    pairs     a folder of `name.jpg` + `name.txt` (WebDataset's naming; any depth)
    table     a CSV / TSV / JSON-lines table: an image path column and a caption column (paths
              relative to the table's folder, or absolute)
    cn_clip   Chinese-CLIP's dataset layout: `{split}_imgs.tsv` (`image_id<TAB>base64`) and
              `{split}_texts.jsonl` (`{"text_id", "text", "image_ids"}`), as MUGE and
              Flickr30K-CN ship; every (text, image) pair becomes a candidate

Each candidate's URL is the image's `file://` URL, which img2dataset reads (urllib opens file
URLs) and resizes like any download. Chinese-CLIP's images are base64 inside the TSV: they are
written once as files under the candidates stage's folder (`local-NNNNN/<split>/<image_id>.jpg`).
A missing image, an image id a text names but the TSV lacks, a caption that is empty or too
long: each is dropped with its reason, counted, never fatal.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path

from tasks.crawl.filters import PairFilter, candidate_rows
from tasks.engine import Stats, atomic
from tasks.specs import CrawlSpec, LocalSpec, SpecError, TableSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def local_layout(spec: LocalSpec) -> str:
    """The layout of a local source: as given, or told from what is on disk."""
    p = Path(spec.path)
    if spec.layout != "auto":
        return spec.layout
    if p.is_file():
        return "table"
    if any(p.glob("*_texts.jsonl")):
        return "cn_clip"
    return "pairs"


def check_local(spec: LocalSpec, where: str) -> None:
    """A local source that cannot be read fails at validation, naming the spec key."""
    p = Path(spec.path)
    if not p.exists():
        raise SpecError(f"{where}.path: {p} does not exist")
    layout = local_layout(spec)
    if layout == "table":
        from tasks.crawl.tables import check_table_columns

        check_table_columns(_as_table(spec), where)
    elif layout == "cn_clip" and not [s for s in spec.splits if (p / f"{s}_texts.jsonl").exists()]:
        raise SpecError(f"{where}: {p} holds none of {', '.join(f'{s}_texts.jsonl' for s in spec.splits)} "
                        "(Chinese-CLIP's layout: {split}_imgs.tsv and {split}_texts.jsonl)")
    elif layout == "pairs" and not p.is_dir():
        raise SpecError(f"{where}.path: {p} is not a folder (layout pairs: name.jpg + name.txt)")


def _as_table(spec: LocalSpec) -> TableSpec:
    return TableSpec(path=spec.path, url_col=spec.image_col, caption_col=spec.caption_col)


def iter_local(spec: LocalSpec, crawl: CrawlSpec, stats: Stats, work_dir: Path, dropped: list | None = None) -> Iterator[dict]:
    """Candidate rows (uid, url, text, page_url, lang, source, record) of one local source."""
    pairs = {"pairs": _folder_pairs, "table": _table_pairs, "cn_clip": _cn_clip_pairs}[local_layout(spec)]
    yield from candidate_rows(pairs(spec, stats, work_dir), PairFilter(crawl, stats), stats, spec.path, dropped, "local")


def _folder_pairs(spec: LocalSpec, stats: Stats, work_dir: Path) -> Iterator[tuple[str, str, str | None]]:
    """`name.jpg` + `name.txt` (UTF-8) anywhere under the folder, in path order."""
    for img in sorted(p for p in Path(spec.path).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        txt = img.with_suffix(".txt")
        if not txt.exists():
            yield str(img), "", "local_no_caption"
            continue
        yield str(img), txt.read_text(encoding="utf-8", errors="replace"), None


def _table_pairs(spec: LocalSpec, stats: Stats, work_dir: Path) -> Iterator[tuple[str, str, str | None]]:
    from tasks.crawl.tables import read_table

    table = read_table(_as_table(spec))
    root = Path(spec.path).parent
    for p, text in zip(table[spec.image_col].to_pylist(), table[spec.caption_col].to_pylist()):
        path = root / str(p) if p is not None else None
        if path is None or not path.is_file():
            yield str(path or ""), str(text or ""), "local_missing_image"
            continue
        yield str(path), str(text) if text is not None else "", None


def _cn_clip_pairs(spec: LocalSpec, stats: Stats, work_dir: Path) -> Iterator[tuple[str, str, str | None]]:
    """Each split's images are written out as files (once), then each text yields one pair per
    image it names."""
    root = Path(spec.path)
    for split in spec.splits:
        texts = root / f"{split}_texts.jsonl"
        if not texts.exists():
            continue
        images = _write_tsv_images(root / f"{split}_imgs.tsv", work_dir / split, stats)
        with open(texts, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    text, ids = str(rec["text"]), list(rec["image_ids"])
                except (ValueError, KeyError, TypeError):
                    yield "", "", "local_bad_record"
                    continue
                for image_id in ids:
                    path = images.get(str(image_id))
                    yield (str(path), text, None) if path else (f"{split}:{image_id}", text, "local_missing_image")


def _write_tsv_images(tsv: Path, out: Path, stats: Stats) -> dict[str, Path]:
    """`image_id<TAB>base64` lines -> out/<image_id>.<jpg|png|...>; image id -> its file."""
    from tasks.download.driver import IMAGE_MAGIC

    found: dict[str, Path] = {}
    if not tsv.exists():
        return found
    out.mkdir(parents=True, exist_ok=True)
    with open(tsv, encoding="utf-8") as fh:
        for line in fh:
            image_id, _, b64 = line.rstrip("\n").partition("\t")
            if not image_id:
                continue
            try:
                data = base64.urlsafe_b64decode(b64)  # cn_clip writes urlsafe base64; standard decodes too
                if not data.startswith(IMAGE_MAGIC):
                    raise ValueError("not an image")
            except (binascii.Error, ValueError):
                stats.counts["local_bad_image_rows"] += 1
                continue
            ext = ".png" if data.startswith(b"\x89PNG") else ".jpg"
            target = out / f"{image_id}{ext}"
            if not target.exists():
                with atomic(target) as tmp:
                    tmp.write_bytes(data)
            found[image_id] = target
    return found
