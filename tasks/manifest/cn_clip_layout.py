"""A build's shards in Chinese-CLIP's dataset layout, so its own scripts train and evaluate on it.

    OUT/{split}_imgs.tsv       image_id<TAB>urlsafe-base64 of the image (cn_clip decodes it with
                               base64.urlsafe_b64decode)
    OUT/{split}_texts.jsonl    {"text_id": int, "text": str, "image_ids": [int, ...]}
    OUT/lmdb/{split}/pairs     LMDB: str(index) -> pickle((image_id, text_id, text)), b"num_samples"
    OUT/lmdb/{split}/imgs      LMDB: str(image_id) -> base64, b"num_images"

The LMDB is what `cn_clip/preprocess/build_lmdb_dataset.py` writes from the two files above and
what `cn_clip.training.data.LMDBDataset` reads (`--train-data OUT/lmdb/train`). One image id per
distinct image URL; one text id per distinct caption of a split, listing every image it
describes. Splits are drawn per image (a hash of seed and URL), so no image of valid or test is
in train. Written to a temporary folder and renamed: an interrupted export leaves no OUT.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import BaseModel
from tqdm import tqdm

from tasks.engine import atomic

IMAGE_COLUMNS = ("jpg", "png", "webp")


class ExportStats(BaseModel):
    images: dict[str, int] = {}
    texts: dict[str, int] = {}
    pairs: dict[str, int] = {}
    skipped_rows: int = 0  # rows without image bytes

    def summary(self) -> str:
        per = ", ".join(f"{s} {self.images[s]:,} images / {self.texts.get(s, 0):,} texts / {self.pairs.get(s, 0):,} pairs"
                        for s in self.images)
        return f"Chinese-CLIP layout: {per}" + (f"; {self.skipped_rows:,} rows without an image skipped" if self.skipped_rows else "")


def split_of(url: str, seed: int, valid: float, test: float) -> str:
    """train / valid / test for an image, from a hash of (seed, URL): stable across reruns."""
    u = int.from_bytes(hashlib.sha1(f"{seed}:{url}".encode()).digest()[:8], "big") / 2**64
    return "valid" if u < valid else "test" if u < valid + test else "train"


def shard_files(build: Path) -> list[Path]:
    folder = build / "shards" if (build / "shards").is_dir() else build
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{build}: no parquet shards (give a build folder with shards/, or a folder of shards)")
    return files


def export_cn_clip(build: str | Path, out: str | Path, valid: float = 0.02, test: float = 0.0, seed: int = 0
                   ) -> tuple[Path, ExportStats]:
    if not (0 <= valid and 0 <= test and valid + test < 1):
        raise ValueError(f"--valid {valid} and --test {test}: shares in [0, 1) that leave some images for train")
    build, out = Path(build), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or give another --out")
    files = shard_files(build)
    with atomic(out) as tmp:  # the whole folder appears at once, or not at all
        tmp.mkdir()
        stats = _write_layout(files, tmp, valid, test, seed)
        _write_lmdb(tmp, list(stats.images))
    return out, stats


def _write_layout(files: list[Path], out: Path, valid: float, test: float, seed: int) -> ExportStats:
    stats = ExportStats()
    image_ids: dict[str, int] = {}  # url -> image id
    texts: dict[str, dict[str, list[int]]] = {}  # split -> text -> image ids
    tsv: dict = {}
    with contextlib.ExitStack() as files_open:
        for f in tqdm(files, desc="export-cn-clip: shards", unit="shard"):
            pf = pq.ParquetFile(f)
            col = next((c for c in IMAGE_COLUMNS if c in pf.schema_arrow.names), None)
            if col is None:
                raise ValueError(f"{f}: no image column ({', '.join(IMAGE_COLUMNS)}); is it a build's shard?")
            for batch in pf.iter_batches(columns=["url", "caption", col], batch_size=1000):
                for url, caption, data in zip(*(batch.column(i).to_pylist() for i in range(3))):
                    if not data:
                        stats.skipped_rows += 1
                        continue
                    split = split_of(url, seed, valid, test)
                    if url not in image_ids:
                        image_ids[url] = len(image_ids)
                        if split not in tsv:
                            tsv[split] = files_open.enter_context(open(out / f"{split}_imgs.tsv", "w", encoding="utf-8"))
                            stats.images[split] = 0
                        tsv[split].write(f"{image_ids[url]}\t{base64.urlsafe_b64encode(data).decode()}\n")
                        stats.images[split] += 1
                    ids = texts.setdefault(split, {}).setdefault(caption, [])
                    if image_ids[url] not in ids:
                        ids.append(image_ids[url])
    text_id = 0
    for split, by_text in texts.items():
        with open(out / f"{split}_texts.jsonl", "w", encoding="utf-8") as fh:
            for text, ids in by_text.items():
                fh.write(json.dumps({"text_id": text_id, "text": text, "image_ids": ids}, ensure_ascii=False) + "\n")
                text_id += 1
        stats.texts[split] = len(by_text)
        stats.pairs[split] = sum(len(v) for v in by_text.values())
    return stats


def _write_lmdb(folder: Path, splits: list[str]) -> None:
    """build_lmdb_dataset.py's LMDB, from the files written above."""
    for split in splits:
        d = folder / "lmdb" / split
        d.mkdir(parents=True)
        _fill(d / "pairs", _pairs(folder / f"{split}_texts.jsonl"), b"num_samples")
        _fill(d / "imgs", _images(folder / f"{split}_imgs.tsv"), b"num_images")


def _pairs(texts: Path) -> Iterator[tuple[bytes, bytes]]:
    """str(index) -> pickle((image_id, text_id, text)), one per (text, image)."""
    n = 0
    with open(texts, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            for image_id in rec["image_ids"]:
                yield str(n).encode(), pickle.dumps((image_id, rec["text_id"], rec["text"]))
                n += 1


def _images(tsv: Path) -> Iterator[tuple[bytes, bytes]]:
    """str(image_id) -> base64."""
    with open(tsv, encoding="utf-8") as fh:
        for line in fh:
            image_id, b64 = line.rstrip("\n").split("\t")
            yield image_id.encode(), b64.encode()


def _fill(path: Path, items: Iterator[tuple[bytes, bytes]], count_key: bytes, commit_every: int = 5000) -> None:
    """Write `items` into a new LMDB at `path`, committing every `commit_every`, then their count."""
    import lmdb

    with lmdb.open(str(path), map_size=1024**4) as env:
        n = 0
        txn = env.begin(write=True)
        for key, value in items:
            txn.put(key, value)
            n += 1
            if n % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(count_key, str(n).encode())
        txn.commit()
