"""Evaluation datasets, and their images in batches on the model's device.

Sources (`SourceConfig.kind`): an ImageFolder (`<class>/*.jpg`), CIFAR-10/100 python pickle
batches, an ImageNet validation folder with its `LOC_synset_mapping.txt`, a parquet table with
image bytes and a label or captions. Files and bytes are decoded in the training loader's decode
processes (training/data/pool.py) with the evaluation transform (centre square, bicubic), and
travel to the device as uint8, where they are normalised: the same numbers as `eval_tensor`.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from training.config import SourceConfig, SuiteConfig
from training.data.images import normalise

IMG_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
OPENAI_IMAGENET_CLASSNAMES = Path(__file__).resolve().parents[1] / "metadata" / "imagenet_classnames_openai.txt"


@dataclass
class LabelledSet:
    images: list  # paths, bytes or PIL images
    labels: np.ndarray
    classnames: list[str]
    captions: list[list[str]] = field(default_factory=list)


def open_image(x) -> Image.Image:
    return x if isinstance(x, Image.Image) else Image.open(io.BytesIO(x) if isinstance(x, bytes) else x)


def load_imagefolder(path: Path, max_images: int | None = None) -> LabelledSet:
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    images, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMG_EXT)
        images += files
        labels += [c] * len(files)
    return _cap(LabelledSet(images, np.array(labels), classes), max_images)


def load_cifar(path: Path, hundred: bool = False, max_images: int | None = None) -> LabelledSet:
    batch = "test" if hundred else "test_batch"
    # CIFAR's own python batches are pickles: only load them from the dataset's official files
    with open(path / ("meta" if hundred else "batches.meta"), "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    with open(path / batch, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    data = d["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array(d["fine_labels" if hundred else "labels"])
    names = meta["fine_label_names" if hundred else "label_names"]
    return _cap(LabelledSet([Image.fromarray(a) for a in data], labels, [n.replace("_", " ") for n in names]), max_images)


def load_imagenet(path: Path, synset_map: Path, max_images: int | None = None, wordnet_names: bool = False) -> LabelledSet:
    """ImageNet-1k in <wnid>/ folders. Class names: OpenAI's curated list (the one open_clip and
    clip_benchmark use, in wnid order; the WordNet first lemmas collide, e.g. two "crane"s), or
    with `wordnet_names` the first lemma of each synset in `synset_map`."""
    wnids, names = [], []
    for line in synset_map.read_text().splitlines():
        wnid, rest = line.split(" ", 1)
        wnids.append(wnid)
        names.append(rest.split(",")[0].strip())
    if not wordnet_names:
        if len(wnids) != 1000 or wnids != sorted(wnids):
            raise ValueError(f"{synset_map}: OpenAI's class names need the 1,000 ImageNet-1k synsets in wnid order "
                             f"({len(wnids)} found); set `classnames: wordnet` in the suite to use WordNet lemmas")
        names = OPENAI_IMAGENET_CLASSNAMES.read_text().splitlines()
    images, labels = [], []
    for c, w in enumerate(wnids):
        files = sorted((path / w).glob("*")) if (path / w).is_dir() else []
        images += files
        labels += [c] * len(files)
    return _cap(LabelledSet(images, np.array(labels), names), max_images)


def load_parquet(src: SourceConfig, classnames: list[str] | None) -> LabelledSet:
    t = pq.read_table(src.path)
    images = t[src.image_col].to_pylist()
    if src.label_col in t.column_names:
        labels = np.array(t[src.label_col].to_pylist())
        return _cap(LabelledSet(images, labels, classnames or [str(i) for i in range(int(labels.max()) + 1)]), src.max_images)
    caps = t[src.caption_col].to_pylist() if src.caption_col in t.column_names else t["captions"].to_pylist()
    caps = [c if isinstance(c, list) else [c] for c in caps]
    return _cap(LabelledSet(images, np.zeros(len(images), dtype=np.int64), [], caps), src.max_images)


def _cap(s: LabelledSet, n: int | None) -> LabelledSet:
    if n is None or len(s.images) <= n:
        return s
    idx = np.random.default_rng(0).permutation(len(s.images))[:n]
    idx.sort()
    return LabelledSet([s.images[i] for i in idx], s.labels[idx], s.classnames, [s.captions[i] for i in idx] if s.captions else [])


_CACHE: dict[tuple, LabelledSet] = {}


def suite_data(suite: SuiteConfig, split: str = "test") -> LabelledSet:
    """The dataset a suite names (memoised per process): its `source`, or with split="train" its
    `train_source` (the linear probe's training split)."""
    src = suite.train_source if split == "train" else suite.source
    listed = list(suite.classnames) if isinstance(suite.classnames, tuple) else None
    key = (src, suite.wordnet_names, tuple(listed or ()))
    if key not in _CACHE:
        if src.kind == "imagefolder":
            data = load_imagefolder(src.path, src.max_images)
        elif src.kind in ("cifar10", "cifar100"):
            data = load_cifar(src.path, src.kind == "cifar100", src.max_images)
        elif src.kind == "imagenet":
            if src.synset_map is None:
                raise ValueError(f"suite {suite.name}: an imagenet source needs synset_map (LOC_synset_mapping.txt)")
            data = load_imagenet(src.path, src.synset_map, src.max_images, wordnet_names=suite.wordnet_names)
        else:
            data = load_parquet(src, listed)
        _CACHE[key] = data
    return _CACHE[key]


def image_batches(images: list, labels: np.ndarray, size: int, device: torch.device, bs: int = 256,
                  workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(normalised images [B,3,S,S] on `device`, labels [B]) with CLIP's evaluation transform;
    decoded by `workers` processes (0: here), in chunks of 32, assembled in order."""
    from training.data.pool import DecodePool, decode_chunks

    chunk = 32
    chunks = ((i, [(_bytes(x), None) for x in images[i:i + chunk]]) for i in range(0, len(images), chunk))
    pool = DecodePool(workers, chunk, size) if workers and len(images) > chunk else None
    try:
        batch, first = np.empty((bs, size, size, 3), np.uint8), 0
        n = 0
        for i, decoded, statuses in decode_chunks(chunks, pool, size, chunk):
            bad = [(images[i + j], s) for j, s in enumerate(statuses) if s]
            if bad:
                raise ValueError(f"{len(bad)} evaluation images do not decode ({bad[0][1]}), e.g. {bad[0][0]}")
            batch[n:n + len(decoded)] = decoded
            n += len(decoded)
            if n == bs or i + len(decoded) == len(images):
                yield normalise(torch.from_numpy(batch[:n].copy()).to(device)), torch.from_numpy(labels[first:first + n])
                first, n = first + n, 0
    finally:
        if pool is not None:
            pool.close()


def _bytes(x) -> bytes:
    """An image's encoded bytes: a file's, or an in-memory image written losslessly (CIFAR)."""
    if isinstance(x, Image.Image):
        buf = io.BytesIO()
        x.save(buf, format="PNG")
        return buf.getvalue()
    return x if isinstance(x, bytes) else Path(x).read_bytes()
