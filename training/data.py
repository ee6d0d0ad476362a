"""From parquet shards to batches: a streaming per-worker reader with CLIP's augmentation.

Memory is bounded by the shuffle window and the prefetch depth, never by the build's size:

- **Units.** The build's row groups (1,000 rows each in shards build-wit writes; listed in the
  manifest, so no shard footer is opened to plan an epoch), split into slices of at most
  `unit_rows` rows. Every epoch draws a seeded permutation of all units and worker `rank` takes
  every `world`-th one: the workers' shares are disjoint and together cover the build once.
- **Shuffle window.** A worker reads `shuffle_units` units at a time (one *block*), keeps the
  rows of its subset (`in_balanced` / `in_unbalanced`) and visits them in a seeded random order.
  Only that block's encoded images are in memory.
- **Parallel decode, prefetch.** A background thread assembles batches ahead of the training
  step (`prefetch` batches deep), decoding and augmenting on a pool of `threads` threads (Pillow
  releases the GIL while it decodes and resizes), and pins them for the GPU when one is used.
- **Exact position.** The state after a batch is (epoch, block, offset into the block's order)
  plus the skip counts; the augmentation of each row is seeded by that position, so a resumed
  worker produces the very batches it would have produced.
- **Bad records.** A row that fails to decode is counted by exception type and replaced by the
  next row of the stream: a batch never holds duplicates (they would be false negatives in the
  contrastive loss) and every worker's batch has the same size.

Epochs are per worker: a worker moves on to its share of the next epoch when its own share is
done, and a batch may span two epochs. Training is counted in steps, so nothing waits on that.

Augmentation as CLIP trains: random resized crop with scale (0.9, 1.0), CLIP's mean/std.
"""

from __future__ import annotations

import io
import json
import math
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np
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
    return crop_from_uniforms(img, size, rng.random((10, 4)), scale, ratio)


def crop_from_uniforms(img: Image.Image, size: int, u: np.ndarray, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """torchvision's RandomResizedCrop (10 tries, then the centre) driven by 10x4 uniforms in
    [0, 1): area fraction, log aspect ratio, x and y of each try."""
    w, h = img.size
    area = w * h
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    for u0, u1, u2, u3 in u.tolist():
        target = area * (scale[0] + u0 * (scale[1] - scale[0]))
        ar = math.exp(lr0 + u1 * (lr1 - lr0))
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(u2 * (w - cw + 1)), int(u3 * (h - ch + 1))
            return img.resize((size, size), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    return center_resize(img, size)


def center_resize(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.resize((size, size), Image.BICUBIC, box=box)


_MEAN_T = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
_STD_T = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def normalise(batch_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] uint8 -> [B,3,H,W] float32 with CLIP's mean/std (what to_tensor does per image)."""
    return (batch_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0) - _MEAN_T).div_(_STD_T).contiguous()


class Unit(NamedTuple):
    """Rows [start, stop) of one row group of one shard: what a worker reads at once."""

    shard: int
    row_group: int
    start: int
    stop: int


def list_units(build: Path, manifest: dict, unit_rows: int) -> list[Unit]:
    """Every unit of the build, in manifest order. Row-group sizes come from the manifest
    (older builds: from each shard's footer)."""
    units = []
    for i, s in enumerate(manifest["shards"]):
        groups = s.get("row_groups")
        if groups is None:
            meta = pq.read_metadata(build / s["path"])
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        for g, n in enumerate(groups):
            units.extend(Unit(i, g, a, min(n, a + unit_rows)) for a in range(0, n, unit_rows))
    return units


@dataclass
class LoaderState:
    epoch: int = 0
    block: int = 0  # index of the block (shuffle window) in this worker's share of the epoch
    offset: int = 0  # rows of that block already taken (decoded or skipped)
    skipped: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> LoaderState:
        """A checkpoint's position; one written by the old whole-build loader starts the epoch over."""
        if not d or "block" not in d:
            return cls(epoch=int((d or {}).get("epoch", 0)), skipped=dict((d or {}).get("skipped", {})))
        return cls(int(d["epoch"]), int(d["block"]), int(d["offset"]), dict(d.get("skipped", {})))

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "block": self.block, "offset": self.offset, "skipped": dict(self.skipped)}


class _Batch(NamedTuple):
    images: torch.Tensor
    tokens: torch.Tensor
    uids: list[str]
    state: LoaderState  # the position right after this batch


class ShardLoader:
    """Yields (images [B,3,S,S], tokens [B,L]) for one worker; state() resumes it exactly."""

    def __init__(self, build: str | Path, tokenizer: Tokenizer, image_size: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, state: LoaderState | None = None, augment: bool = True,
                 subset: str = "balanced", threads: int = 2, prefetch: int = 2, shuffle_units: int = 8,
                 unit_rows: int = 1000, pin_memory: bool = False):
        self.build = Path(build)
        self.manifest = json.loads((self.build / "manifest.json").read_text())
        self.image_col = self.manifest.get("image_column", "jpg")
        self.columns = ["caption", self.image_col, f"in_{subset}", "uid"]
        self.tok, self.size, self.bs = tokenizer, image_size, batch_size  # bs: per worker
        self.seed, self.rank, self.world, self.augment, self.subset = seed, rank, world, augment, subset
        self.shuffle_units, self.prefetch, self.pin = max(1, shuffle_units), max(1, prefetch), pin_memory
        total = self.manifest["totals"]["rows"]
        if total < batch_size * world:
            raise ValueError(f"the build has {total} rows, fewer than one global batch ({batch_size * world}): "
                             f"lower train.batch_size or build more data")
        # small builds: slice finer so that every worker gets a share (at least two units each)
        unit_rows = max(1, min(unit_rows, math.ceil(total / (2 * world))))
        self.units = list_units(self.build, self.manifest, unit_rows)
        self.st = state or LoaderState()
        self.last_uids: list[str] = []
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix=f"decode-r{rank}") if threads > 1 else None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._files: dict[int, pq.ParquetFile] = {}

    # -- the stream of rows ---------------------------------------------------------------
    def _blocks(self, epoch: int) -> list[list[Unit]]:
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        share = [self.units[i] for i in perm[self.rank::self.world]]
        return [share[i:i + self.shuffle_units] for i in range(0, len(share), self.shuffle_units)]

    def _file(self, shard: int) -> pq.ParquetFile:
        if shard not in self._files:
            if len(self._files) > 64:  # bound open files on builds with thousands of shards
                self._files.clear()
            self._files[shard] = pq.ParquetFile(self.build / self.manifest["shards"][shard]["path"])
        return self._files[shard]

    def _read_block(self, units: list[Unit]) -> tuple[list[str], list, list[str]]:
        caps, imgs, uids = [], [], []
        for u in units:
            t = self._file(u.shard).read_row_group(u.row_group, columns=self.columns).slice(u.start, u.stop - u.start)
            t = t.filter(pc.equal(t[f"in_{self.subset}"], True))
            caps += t["caption"].to_pylist()
            imgs += t[self.image_col].to_pylist()
            uids += t["uid"].to_pylist()
        return caps, imgs, uids

    def _rows(self, st: LoaderState) -> Iterator[tuple[LoaderState, str, bytes, str, np.ndarray]]:
        """(position after the row, caption, image bytes, uid, its crop's uniforms), forever."""
        epoch, block, offset = st.epoch, st.block, st.offset
        while True:
            blocks, rows_this_epoch = self._blocks(epoch), 0
            if not blocks:
                raise ValueError(f"worker {self.rank} of {self.world} has no rows to read: the build has only "
                                 f"{len(self.units)} units; use fewer workers")
            while block < len(blocks):
                caps, imgs, uids = self._read_block(blocks[block])
                rng = np.random.default_rng([self.seed, epoch, self.rank, block])
                order = rng.permutation(len(caps))
                crops = rng.random((len(caps), 10, 4))  # the k-th row's crop: seeded by its position alone
                rows_this_epoch += len(caps)
                for k in range(offset, len(order)):
                    j = order[k]
                    yield LoaderState(epoch, block, k + 1), caps[j], imgs[j], uids[j], crops[k]
                block, offset = block + 1, 0
            if rows_this_epoch == 0 and st.block == 0 and st.offset == 0:
                raise ValueError(f"worker {self.rank} found no `{self.subset}` rows in its share of the build")
            epoch, block, st = epoch + 1, 0, LoaderState()

    def _decode(self, data: bytes, u: np.ndarray) -> np.ndarray | str:
        """HxWx3 uint8 (normalised per batch, in torch), or the exception's name."""
        try:
            img = Image.open(io.BytesIO(data))
            img = crop_from_uniforms(img, self.size, u) if self.augment else center_resize(img, self.size)
            return np.asarray(img.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - a bad record is skipped and counted
            return type(e).__name__

    def _batches(self) -> Iterator[_Batch]:
        rows = self._rows(self.st)
        skipped = dict(self.st.skipped)
        mapper = self._pool.map if self._pool else map
        while True:
            imgs, caps, uids, pos = [], [], [], None
            while len(imgs) < self.bs:  # a failed record is replaced by the next row, never duplicated
                take = [next(rows) for _ in range(self.bs - len(imgs))]
                for (p, cap, _data, uid, _rng), x in zip(take, mapper(lambda r: self._decode(r[2], r[4]), take)):
                    pos = p
                    if isinstance(x, str):
                        skipped[x] = skipped.get(x, 0) + 1
                    else:
                        imgs.append(x)
                        caps.append(cap)
                        uids.append(uid)
            images = normalise(torch.from_numpy(np.stack(imgs)))
            if self.pin and torch.cuda.is_available():
                images = images.pin_memory()
            yield _Batch(images, self.tok(caps), uids, LoaderState(pos.epoch, pos.block, pos.offset, dict(skipped)))

    def _produce(self) -> None:
        try:
            for b in self._batches():
                while not self._stop.is_set():
                    try:
                        self._queue.put(b, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            self._queue.put(e)

    # -- the consumer's side --------------------------------------------------------------
    def state(self) -> LoaderState:
        return LoaderState(self.st.epoch, self.st.block, self.st.offset, dict(self.st.skipped))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next per-worker batch (prefetched in the background)."""
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._produce, name=f"loader-r{self.rank}", daemon=True)
            self._thread.start()
        b = self._queue.get()
        if isinstance(b, BaseException):
            raise b
        self.st, self.last_uids = b.state, b.uids
        return b.images, b.tokens

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
