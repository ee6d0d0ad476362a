"""Fan a function out over jobs: in-process, in spawned processes, or as Ray tasks on a cluster."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from tqdm import tqdm


def run_parallel(fn: Callable, jobs: list[tuple], workers: int, ray_address: str | None, desc: str) -> list:
    """fn(*job) for every job, results in job order, with a progress bar."""
    if not jobs:
        return []
    if ray_address:
        import ray

        ray.init(address=ray_address, ignore_reinit_error=True)
        remote = ray.remote(fn)
        return ray.get([remote.remote(*j) for j in jobs])
    if workers <= 1 or len(jobs) == 1:
        return [fn(*j) for j in tqdm(jobs, desc=desc, unit="job")]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, *j) for j in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, unit="job")]
