"""From parquet shards to batches: a per-worker shard reader with CLIP's augmentation.

Why not Ray Data: on the CPU machines this runs on, a per-worker reader over row groups keeps
all decoding in the training process with no object-store copies; it also makes the reading
position trivial to checkpoint (epoch, index into a seeded permutation). Each worker reads a
disjoint stride of that permutation, so N workers see every sample once per epoch.

Augmentation as CLIP trains: random resized crop with scale (0.9, 1.0), CLIP's mean/std.
A row that fails to decode is skipped and counted, never fatal.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from training.checkpoint import CLIP_MEAN, CLIP_STD
from training.tokenizer import Tokenizer

_MEAN = np.array(CLIP_MEAN, dtype=np.float32)[:, None, None]
_STD = np.array(CLIP_STD, dtype=np.float32)[:, None, None]


def to_tensor(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (arr - _MEAN) / _STD


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(target * ar))), int(round(np.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            return img.resize((size, size), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    return center_resize(img, size)


def center_resize(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.resize((size, size), Image.BICUBIC, box=box)


def load_rows(build: Path, subset: str = "balanced") -> tuple[pa.Table, dict]:
    """Captions and image bytes of the build's training shards (the `subset` rows)."""
    manifest = json.loads((build / "manifest.json").read_text())
    col = manifest.get("image_column", "jpg")
    tables = []
    for s in manifest["shards"]:
        t = pq.read_table(build / s["path"], columns=["caption", col, "in_balanced", "in_unbalanced", "uid"])
        tables.append(t.filter(pc.equal(t[f"in_{subset}"], True)))
    table = pa.concat_tables(tables).rename_columns(["caption", "image", "in_balanced", "in_unbalanced", "uid"])
    return table, manifest


@dataclass
class LoaderState:
    epoch: int = 0
    index: int = 0  # position in this epoch's permutation (global, over all workers)
    skipped: dict = field(default_factory=dict)


class ShardLoader:
    """Yields (images [B,3,S,S], tokens [B,L]) for one worker; state() resumes it exactly."""

    def __init__(self, table: pa.Table, tokenizer: Tokenizer, image_size: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, state: LoaderState | None = None, augment: bool = True):
        self.images = table["image"]
        self.captions = table["caption"].to_pylist()
        self.n = table.num_rows
        self.tok, self.size, self.bs = tokenizer, image_size, batch_size  # bs: per worker
        self.seed, self.rank, self.world, self.augment = seed, rank, world, augment
        self.st = state or LoaderState()
        if self.n < batch_size * world:
            raise ValueError(f"dataset has {self.n} rows, fewer than one global batch ({batch_size * world})")

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def state(self) -> LoaderState:
        return LoaderState(self.st.epoch, self.st.index, dict(self.st.skipped))

    def _decode(self, i: int, rng: np.random.Generator) -> np.ndarray | None:
        try:
            img = Image.open(io.BytesIO(self.images[i].as_py()))
            img = random_resized_crop(img, self.size, rng) if self.augment else center_resize(img, self.size)
            return to_tensor(img)
        except Exception as e:  # noqa: BLE001 - a bad record is skipped and counted
            key = type(e).__name__
            self.st.skipped[key] = self.st.skipped.get(key, 0) + 1
            return None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next per-worker batch; an epoch ends when a full global batch no longer fits."""
        global_bs = self.bs * self.world
        if self.st.index + global_bs > self.n:
            self.st.epoch += 1
            self.st.index = 0
        perm = self._perm(self.st.epoch)
        idx = perm[self.st.index + self.rank * self.bs: self.st.index + (self.rank + 1) * self.bs]
        rng = np.random.default_rng([self.seed, self.st.epoch, self.st.index, self.rank])
        self.st.index += global_bs
        imgs, caps = [], []
        for i in idx.tolist():
            x = self._decode(i, rng)
            if x is not None:
                imgs.append(x)
                caps.append(self.captions[i])
        while len(imgs) < self.bs:  # keep batch shapes equal across workers: repeat if records failed
            imgs.append(imgs[len(imgs) % max(1, len(imgs))] if imgs else np.zeros((3, self.size, self.size), np.float32))
            caps.append(caps[len(caps) % max(1, len(caps))] if caps else "")
        return torch.from_numpy(np.stack(imgs)), self.tok(caps)
