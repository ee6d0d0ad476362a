"""Which rows a worker reads, in which order, and where it stands: the loader's bookkeeping.

- **Units.** The build's row groups (1,000 rows each in shards build-wit writes; listed in the
  manifest, so no shard footer is opened to plan an epoch), split into slices of at most
  `unit_rows` rows. Every epoch draws a seeded permutation of all units and worker `rank` takes
  every `world`-th one: the workers' shares are disjoint and together cover the build once.
- **Blocks.** A worker reads `shuffle_units` units at a time (one block: its memory bound), keeps
  the rows of its subset and visits them in a seeded random order.
- **Position.** (epoch, block, offset into the block's order) plus skip counts: `LoaderState`.
  The crop of each row is drawn from its position alone, so a resumed worker yields the very
  rows, and crops, it would have yielded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the build
    rows: int
    row_groups: tuple[int, ...] | None = None  # rows per row group (older manifests: None)


@dataclass(frozen=True)
class BuildManifest:
    """The part of a build's manifest.json the loader reads."""

    shards: tuple[ShardInfo, ...]
    rows: int
    image_column: str = "jpg"

    @classmethod
    def read(cls, build: Path) -> BuildManifest:
        m = json.loads((build / "manifest.json").read_text())
        shards = tuple(ShardInfo(s["path"], int(s["rows"]), tuple(s["row_groups"]) if s.get("row_groups") else None)
                       for s in m["shards"])
        return cls(shards, int(m["totals"]["rows"]), m.get("image_column", "jpg"))


class Unit(NamedTuple):
    """Rows [start, stop) of one row group of one shard: what a worker reads at once."""

    shard: int
    row_group: int
    start: int
    stop: int


def list_units(build: Path, manifest: BuildManifest, unit_rows: int) -> list[Unit]:
    """Every unit of the build, in manifest order (row-group sizes from the manifest, or from each
    shard's footer for older builds)."""
    units = []
    for i, s in enumerate(manifest.shards):
        groups = s.row_groups
        if groups is None:
            meta = pq.read_metadata(build / s.path)
            groups = tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
        for g, n in enumerate(groups):
            units.extend(Unit(i, g, a, min(n, a + unit_rows)) for a in range(0, n, unit_rows))
    return units


@dataclass
class LoaderState:
    epoch: int = 0
    block: int = 0  # index of the block (shuffle window) in this worker's share of the epoch
    offset: int = 0  # rows of that block already taken (decoded or skipped)
    skipped: dict[str, int] = field(default_factory=dict)  # rows skipped, by reason (exception name)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "block": self.block, "offset": self.offset, "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict) -> LoaderState:
        """A checkpoint's position; one written by the old whole-build loader starts its epoch over."""
        skipped = dict(d.get("skipped", {}))
        return cls(d["epoch"], d["block"], d["offset"], skipped) if "block" in d else cls(epoch=d.get("epoch", 0), skipped=skipped)


class Row(NamedTuple):
    state: LoaderState  # the position right after this row
    caption: str
    image: bytes
    uid: str
    crop: np.ndarray  # 10x4 uniforms of its random resized crop


class RowStream:
    """One worker's endless, seeded stream of rows from a position."""

    def __init__(self, build: Path, subset: str, seed: int, rank: int, world: int, shuffle_units: int, unit_rows: int,
                 min_rows_per_epoch: int = 1):
        self.build, self.subset, self.seed, self.rank, self.world = build, subset, seed, rank, world
        self.manifest = BuildManifest.read(build)
        self.columns = ["caption", self.manifest.image_column, f"in_{subset}", "uid"]
        self.shuffle_units = max(1, shuffle_units)
        # small builds: slice finer so that every worker gets a share (at least two units each)
        unit_rows = max(1, min(unit_rows, math.ceil(self.manifest.rows / (2 * world))))
        self.units = list_units(build, self.manifest, unit_rows)
        self.min_rows = min_rows_per_epoch
        self._files: dict[int, pq.ParquetFile] = {}

    def blocks(self, epoch: int) -> list[list[Unit]]:
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        share = [self.units[i] for i in perm[self.rank::self.world]]
        return [share[i:i + self.shuffle_units] for i in range(0, len(share), self.shuffle_units)]

    def _file(self, shard: int) -> pq.ParquetFile:
        if shard not in self._files:
            if len(self._files) > 64:  # bound open files on builds with thousands of shards
                self._files.clear()
            self._files[shard] = pq.ParquetFile(self.build / self.manifest.shards[shard].path)
        return self._files[shard]

    def read_block(self, units: list[Unit]) -> tuple[list[str], list[bytes], list[str]]:
        caps, imgs, uids = [], [], []
        for u in units:
            t = self._file(u.shard).read_row_group(u.row_group, columns=self.columns).slice(u.start, u.stop - u.start)
            t = t.filter(pc.equal(t[f"in_{self.subset}"], True))
            caps += t["caption"].to_pylist()
            imgs += t[self.manifest.image_column].to_pylist()
            uids += t["uid"].to_pylist()
        return caps, imgs, uids

    def rows(self, start: LoaderState) -> Iterator[Row]:
        """(position after the row, caption, image bytes, uid, its crop's uniforms), forever."""
        epoch, block, offset = start.epoch, start.block, start.offset
        while True:
            blocks, rows_this_epoch = self.blocks(epoch), 0
            if not blocks:
                raise ValueError(f"worker {self.rank} of {self.world} has no rows to read: the build has only "
                                 f"{len(self.units)} units; use fewer workers")
            for b in range(block, len(blocks)):
                caps, imgs, uids = self.read_block(blocks[b])
                rng = np.random.default_rng([self.seed, epoch, self.rank, b])
                order = rng.permutation(len(caps))
                crops = rng.random((len(caps), 10, 4))  # the k-th row's crop: seeded by its position alone
                rows_this_epoch += len(caps)
                for k in range(offset, len(order)):
                    j = order[k]
                    yield Row(LoaderState(epoch, b, k + 1), caps[j], imgs[j], uids[j], crops[k])
                offset = 0
            if block == 0 and rows_this_epoch < self.min_rows:
                raise ValueError(f"worker {self.rank} of {self.world} has {rows_this_epoch} `{self.subset}` rows in its share "
                                 f"of an epoch, fewer than its batch of {self.min_rows}: a batch would repeat rows (false "
                                 "negatives in the contrastive loss); use fewer workers, a smaller batch or more data")
            epoch, block = epoch + 1, 0
