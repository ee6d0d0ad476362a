"""Fan a function out over jobs: in-process, in spawned processes, or as Ray tasks on a cluster.

Progress shows twice: a tqdm bar in the terminal, and a line every `every` seconds (and at the
end) through `log`, which the build flow points at the Prefect run logger, so the Prefect UI
shows how far a long stage is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Self

from tqdm import tqdm


class LoggedProgress(tqdm):
    """tqdm that also reports `<desc>: n/total (p%), elapsed, eta` to `log` every `every` seconds."""

    def __init__(self, *args, log: Callable[[str], None] | None = None, every: float = 15.0,
                 desc: str = "", total: int | None = None, **kwargs):
        super().__init__(*args, desc=desc, total=total, **kwargs)
        # our own count: a disabled bar (TQDM_DISABLE=1, common in CI and deployments) keeps none
        self._log, self._every, self._desc, self._total = log, every, desc, total
        self._start = self._last = time.monotonic()
        self._n = 0

    def update(self, n: int = 1):
        out = super().update(n)
        self._n += n
        now = time.monotonic()
        if self._log and (now - self._last >= self._every or self._n >= (self._total or 0)):
            self._last = now
            self._log(progress_text(self._desc, self._n, self._total, now - self._start))
        return out


def progress_text(desc: str, n: int, total: int | None, elapsed: float) -> str:
    if not total:
        return f"{desc}: {n:,} in {elapsed:.0f}s"
    eta = elapsed / n * (total - n) if n else 0.0
    return f"{desc}: {n:,}/{total:,} ({100 * n / total:.0f}%) in {elapsed:.0f}s, eta {eta:.0f}s"


def run_parallel(fn: Callable, jobs: list[tuple], workers: int, ray_address: str | None, desc: str,
                 log: Callable[[str], None] | None = None) -> list:
    """fn(*job) for every job, results in job order, with progress."""
    if not jobs:
        return []
    results: list = [None] * len(jobs)
    with LoggedProgress(total=len(jobs), desc=desc, unit="job", log=log) as bar:
        if ray_address:
            import ray

            ray.init(address=ray_address, ignore_reinit_error=True)
            remote = ray.remote(fn)
            pending = {remote.remote(*j): i for i, j in enumerate(jobs)}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    results[pending.pop(ref)] = ray.get(ref)
                    bar.update(1)
        elif workers <= 1 or len(jobs) == 1:
            for i, j in enumerate(jobs):
                results[i] = fn(*j)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(fn, *j): i for i, j in enumerate(jobs)}
                for f in as_completed(futures):
                    results[futures[f]] = f.result()
                    bar.update(1)
    return results


class FileCountProgress:
    """Report `<desc>: n/total` while files matching `pattern` appear in `folder` (work done by
    other processes, e.g. img2dataset's `*_stats.json` per finished shard)."""

    def __init__(self, folder: Path, pattern: str, total: int, desc: str, log: Callable[[str], None] | None, every: float = 15.0):
        self.folder, self.pattern, self.total, self.desc, self.log, self.every = folder, pattern, total, desc, log, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _count(self) -> int:
        return len(list(self.folder.glob(self.pattern))) if self.folder.exists() else 0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.log:
                self.log(progress_text(self.desc, self._count(), self.total, time.monotonic() - self._t0))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.log:
            self.log(progress_text(self.desc, self._count(), self.total, time.monotonic() - self._t0))
