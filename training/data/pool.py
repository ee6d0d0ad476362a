"""Decode worker processes that write images straight into shared memory.

Why processes, and why our own pool (bench/gpu.py, bench/loader.py measure it): decoding and
cropping in threads of the training process reached ~1,050 images/s on 16 cores (the GIL and the
batch assembly serialised them), a fifth of what one H200 trains ViT-B/32 at. A torch
`DataLoader` would parallelise, but each of its workers assembles whole batches from its own
rows, which breaks the loader's guarantees: one stream of rows per rank in a seeded order, a bad
record replaced by the *next* row of that stream, an exact position to resume from. So the
loader keeps the stream in one thread and hands consecutive chunks of it to this pool:

* N processes (`python -m training.data.decode`, torch-free), each decoding one chunk at a time
  into a slot of shared memory (files under /dev/shm mapped by every process, unlinked as soon
  as all have them open, so nothing leaks when a process dies).
* Chunk k goes to worker k mod N; results are consumed in chunk order, so the batches are the
  same as with in-thread decoding, whatever the number of processes.
* A worker that dies raises `DecodeWorkerDied` in the trainer (not a hang); closing the pool, or
  the trainer exiting, ends the workers (they stop at end of file on their pipe).
"""

from __future__ import annotations

import mmap
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

import numpy as np

from training.data.decode import decode_into

T = TypeVar("T")
Rows = list[tuple[bytes, "np.ndarray | None"]]  # (image bytes, crop uniforms or None for the centre crop)


class DecodeWorkerDied(RuntimeError):
    pass


class DecodePool:
    def __init__(self, workers: int, chunk_rows: int, image_size: int, slots_per_worker: int = 2):
        self.workers = workers
        self.shape = (chunk_rows, image_size, image_size, 3)
        self.n_slots = workers * slots_per_worker
        nbytes = int(np.prod(self.shape))
        shm_root = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        folder = Path(tempfile.mkdtemp(prefix="openwit-decode-", dir=shm_root))
        self._procs: list[subprocess.Popen] = []
        self._conns: list[Connection] = []
        try:
            paths, self.slots = [], []
            for i in range(self.n_slots):
                p = folder / f"slot-{i}"
                with open(p, "w+b") as f:
                    f.truncate(nbytes)
                    mm = mmap.mmap(f.fileno(), nbytes)
                self.slots.append(np.ndarray(self.shape, np.uint8, buffer=mm))
                paths.append(str(p))
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                [str(Path(__file__).resolve().parents[2])] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
            for _ in range(workers):
                ours, theirs = socket.socketpair()
                proc = subprocess.Popen([sys.executable, "-m", "training.data.decode", str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
                theirs.close()
                conn = Connection(ours.detach())
                conn.send({"slots": paths, "shape": self.shape})
                self._procs.append(proc)
                self._conns.append(conn)
            for i, conn in enumerate(self._conns):
                if self._recv(i) != "ready":
                    raise DecodeWorkerDied(f"decode worker {i} did not start")
        except BaseException:
            self.close()
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # every process has the slots mapped: nothing to leak
        self._finalizer = weakref.finalize(self, _stop, self._conns, self._procs)

    def submit(self, chunk_id: int, slot: int, rows: list[tuple[bytes, np.ndarray | None]]) -> None:
        """Decode `rows` into slot `slot`; chunk ids go to workers round-robin."""
        try:
            self._conns[chunk_id % self.workers].send((chunk_id, slot, rows))
        except OSError as e:
            raise self._died(chunk_id % self.workers) from e

    def result(self, chunk_id: int) -> list[str | None]:
        """The statuses of chunk `chunk_id` (None: decoded), which must be its worker's oldest."""
        got, statuses = self._recv(chunk_id % self.workers)
        if got != chunk_id:
            raise RuntimeError(f"decode pool out of order: expected chunk {chunk_id}, got {got}")
        return statuses

    def _recv(self, worker: int):
        try:
            return self._conns[worker].recv()
        except (EOFError, OSError) as e:
            raise self._died(worker) from e

    def _died(self, worker: int) -> DecodeWorkerDied:
        code = self._procs[worker].poll()
        return DecodeWorkerDied(f"decode worker {worker} (pid {self._procs[worker].pid}) exited"
                                + (f" with code {code}" if code is not None else "") + "; see its error above")

    def close(self) -> None:
        if hasattr(self, "_finalizer"):
            self._finalizer()
        else:
            _stop(self._conns, self._procs)


def _stop(conns: list[Connection], procs: list[subprocess.Popen]) -> None:
    for c in conns:
        try:
            c.send(None)
            c.close()
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def decode_chunks(chunks: Iterable[tuple[T, Rows]], pool: DecodePool | None, image_size: int,
                  chunk_rows: int) -> Iterator[tuple[T, np.ndarray, list[str | None]]]:
    """(tag, decoded images [n,S,S,3] uint8, status per row: None or the exception's name) for each
    (tag, rows) of `chunks`, in order: decoded ahead by `pool`, or here when it is None. A yielded
    array is valid until the next one is asked for (its slot is then reused)."""
    if pool is None:
        scratch = np.empty((chunk_rows, image_size, image_size, 3), np.uint8)
        for tag, rows in chunks:
            yield tag, scratch[:len(rows)], [decode_into(scratch[j], data, u) for j, (data, u) in enumerate(rows)]
        return
    it = iter(chunks)
    inflight: deque[tuple[int, int, T, int]] = deque()
    next_id = 0
    while True:
        while len(inflight) < pool.n_slots:  # the slot of the chunk consumed last is free again
            try:
                tag, rows = next(it)
            except StopIteration:
                break
            slot = next_id % pool.n_slots
            pool.submit(next_id, slot, rows)
            inflight.append((next_id, slot, tag, len(rows)))
            next_id += 1
        if not inflight:
            return
        chunk_id, slot, tag, n = inflight.popleft()
        statuses = pool.result(chunk_id)
        yield tag, pool.slots[slot][:n], statuses
