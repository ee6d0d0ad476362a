"""From parquet shards to batches: one training worker's streaming loader.

    with ShardLoader(build, tok, 224, batch_size=512, seed=0, rank=r, world=n, workers=15, pin_memory=True) as ld:
        images_BHW3_u8, tokens_BL = ld.next_batch()      # images: uint8, pinned; normalise on the GPU
        ld.state(), ld.last_uids                          # the exact position after it, and its rows

Memory is bounded by the shuffle window, the chunks in flight and the prefetch depth, never by
the build's size. A background thread reads the rows of this worker's share (shares.py), hands
consecutive chunks of them to `workers` decode processes (pool.py; 0: it decodes them itself),
and assembles batches in stream order from the decoded chunks:

- **Bad records** (a row that fails to decode) are counted by exception type and replaced by the
  next row of the stream; a uid already in the batch (a share smaller than a batch wraps into
  the next epoch) is skipped the same way, as `duplicate_in_batch`: a contrastive batch never
  holds a row twice (it would be its own false negative), and every worker's batch has the same size.
- **Exact position.** The state after a batch is the position of its last row; decoded chunks
  past it are thrown away on a resume. Since a row's crop depends only on its position, the
  batches are identical with 0, 1 or N decode processes, and after a resume.
- **Epochs are per worker**: a worker moves on to its share of the next epoch when its own share
  is done, and a batch may span two epochs. Training is counted in steps, so nothing waits on that.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np
import torch

from training.data.pool import DecodePool, decode_chunks
from training.data.shares import LoaderState, Row, RowStream


class _Batch(NamedTuple):
    images: torch.Tensor  # [B,S,S,3] uint8
    tokens: torch.Tensor
    uids: list[str]
    state: LoaderState  # the position right after this batch


class ShardLoader:
    """Yields (images [B,S,S,3] uint8, tokens [B,L]) for one worker; state() resumes it exactly."""

    def __init__(self, build: str | Path, tokenizer, image_size: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, state: LoaderState | None = None, augment: bool = True,
                 subset: str = "balanced", workers: int = 0, prefetch: int = 2, shuffle_units: int = 8,
                 unit_rows: int = 1000, pin_memory: bool = False, chunk_rows: int = 64):
        self.stream = RowStream(Path(build), subset, seed, rank, world, shuffle_units, unit_rows, min_rows_per_epoch=batch_size)
        total = self.stream.manifest.rows
        if total < batch_size * world:
            raise ValueError(f"the build has {total} rows, fewer than one global batch ({batch_size * world}): "
                             f"lower train.batch_size or build more data")
        self.tok, self.size, self.bs, self.rank, self.augment = tokenizer, image_size, batch_size, rank, augment
        self.workers, self.prefetch, self.pin, self.chunk_rows = workers, max(1, prefetch), pin_memory, chunk_rows
        self.st = state or LoaderState()
        self.last_uids: list[str] = []
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: DecodePool | None = None

    def _chunks(self) -> Iterator[tuple[list[Row], list[tuple[bytes, np.ndarray | None]]]]:
        rows = self.stream.rows(self.st)
        while True:  # the stream never ends
            chunk = [next(rows) for _ in range(self.chunk_rows)]
            yield chunk, [(r.image, r.crop if self.augment else None) for r in chunk]

    def _batches(self) -> Iterator[_Batch]:
        skipped = dict(self.st.skipped)
        images, caps, uids, seen = self._new_images(), [], [], set()
        buf = images.numpy()
        if self.workers:
            self._pool = DecodePool(self.workers, self.chunk_rows, self.size)
        for chunk, decoded, statuses in decode_chunks(self._chunks(), self._pool, self.size, self.chunk_rows):
            for j, (row, status) in enumerate(zip(chunk, statuses)):
                reason = status or ("duplicate_in_batch" if row.uid in seen else None)
                if reason:
                    skipped[reason] = skipped.get(reason, 0) + 1
                    continue
                buf[len(uids)] = decoded[j]
                caps.append(row.caption)
                uids.append(row.uid)
                seen.add(row.uid)
                if len(uids) == self.bs:
                    pos, tokens = row.state, self.tok(caps)
                    yield _Batch(images, tokens.pin_memory() if images.is_pinned() else tokens, uids,
                                 LoaderState(pos.epoch, pos.block, pos.offset, dict(skipped)))
                    images, caps, uids, seen = self._new_images(), [], [], set()
                    buf = images.numpy()

    def _new_images(self) -> torch.Tensor:
        """The next batch's uint8 buffer, in pinned memory when the batch goes to a GPU."""
        pin = self.pin and torch.cuda.is_available()
        return torch.empty((self.bs, self.size, self.size, 3), dtype=torch.uint8, pin_memory=pin)

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
        """The next batch of this worker (prepared in the background)."""
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
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
