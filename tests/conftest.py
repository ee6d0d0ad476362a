"""Shared fixtures: a tiny sample world served on a free loopback port, and the real samples in tests/data."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data"  # real third-party samples, with their provenance (tests/data/README.md)
from flows.env import apply_quiet_env

apply_quiet_env()
_OWN_PREFECT_HOME = None  # made by this process, removed by pytest_unconfigure
if os.environ.get("PYTEST_XDIST_WORKER") and "OPENWIT_TEST_PREFECT_HOME" not in os.environ:
    # `make test` runs two pytest-xdist workers: each its own Prefect database (its children, which may
    # import this file again, inherit it)
    _OWN_PREFECT_HOME = os.environ["PREFECT_HOME"] = os.environ["OPENWIT_TEST_PREFECT_HOME"] = tempfile.mkdtemp(
        prefix="openwit-prefect-")


def real(rel: str) -> Path:
    """A real third-party sample kept in the repository (tests/data/README.md says where each is from)."""
    p = REAL / rel
    assert p.exists(), f"{p} is missing: the real samples travel with the repository"
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """(world folder, port): the tiny world generated for a free port and served from a thread."""
    from tasks.specs import WorldSpec
    from tasks.world.generate import ensure_world
    from tasks.world.server import serve_in_thread

    port = free_port()
    spec = WorldSpec(size="tiny", seed=0, port=port)
    world = ensure_world(spec, root=tmp_path_factory.mktemp("worlds"), log=lambda *_: None)
    srv, _t = serve_in_thread(world / "www", port=port)
    yield TinyWorld((world, port, spec), srv)
    srv.shutdown()


class TinyWorld(tuple):
    """(world folder, port, spec), plus `.server` (set `.server.delay_s` to slow every image down)."""

    def __new__(cls, items, server):
        t = super().__new__(cls, items)
        t.server = server
        return t


def build_on_tiny_world(tiny_world, spec_file: str, out: Path) -> Path:
    """build-wit in-process with a repository spec of the tiny world (`data_specs/sample-tiny*.yaml`),
    on the session's tiny world served on its port."""
    import yaml

    from flows.build_wit import build_wit
    from tasks.world import generate

    world, port, _ = tiny_world
    spec = yaml.safe_load((REPO / spec_file).read_text())
    spec["world"]["port"] = port
    orig = generate.world_dir
    generate.world_dir = lambda s, root=None: world  # the fixture's world, served on its port
    try:
        build_wit(spec=spec, out=str(out))
    finally:
        generate.world_dir = orig
    return out


def train_bpe(source, out_path=None, vocab_size: int = 8192, max_captions: int | None = None):
    """A byte-level BPE learned the way build-wit learns one (tasks/manifest/bpe.py), loaded the way
    training loads it: what a test needs to feed a text tower."""
    from tasks.manifest.bpe import train_bpe as learn
    from training.tokenizer import Tokenizer

    return Tokenizer(learn(source, out_path, vocab_size, max_captions))


class TrainWorkerKiller:
    """Fault injection from the test's side: SIGKILL one Ray Train worker process (`ray::RayTrainWorker`)
    once a rank's recorded samples (data.record_samples) in each of `run_dirs` reach `at_step`, once
    per run dir. Nothing in the product knows about it; Ray Train sees a worker die, as on a cluster.
    Only a worker of this test process's Ray is killed: under pytest-xdist another test's Ray Train
    workers may run beside it (a Ray worker inherits the environment, PYTEST_XDIST_WORKER included)."""

    def __init__(self, run_dirs: list[Path], at_step: int, rank: int = 0):
        import threading

        self.run_dirs, self.at_step, self.rank = [Path(d) for d in run_dirs], at_step, rank
        self.killed: dict[Path, int] = {}  # run dir -> the step seen when the kill was sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _last_step(self, run_dir: Path) -> int:
        f = run_dir / "samples" / f"rank-{self.rank}.jsonl"
        try:
            lines = f.read_text().splitlines()
        except OSError:
            return 0
        import json

        try:
            return json.loads(lines[-1])["step"] if lines else 0
        except ValueError:  # a line being written
            return 0

    @staticmethod
    def _ours(proc) -> bool:
        import psutil

        mine = os.environ.get("PYTEST_XDIST_WORKER")
        try:
            return mine is None or proc.environ().get("PYTEST_XDIST_WORKER") == mine
        except psutil.Error:  # gone, or not ours to read
            return False

    def _watch(self) -> None:
        import signal

        import psutil

        while not self._stop.wait(0.02):
            for d in self.run_dirs:
                if d in self.killed or (step := self._last_step(d)) < self.at_step:
                    continue
                workers = [p for p in psutil.process_iter(["cmdline"])
                           if (p.info["cmdline"] or [""])[0].startswith("ray::RayTrainWorker") and self._ours(p)]
                if workers:
                    workers[0].send_signal(signal.SIGKILL)
                    self.killed[d] = step


def expected_samples(build: Path, steps: int, batch_per_rank: int, world: int, seed: int = 0, image_size: int = 32,
                     subset: str = "balanced") -> list[list[list[str]]]:
    """[rank][step - 1] -> the uids an uninterrupted run feeds that rank at that step (the loader
    alone, in this process: its order depends on the build, the seed, the rank and the world size)."""
    from training.data.loader import ShardLoader
    from training.tokenizer import Tokenizer

    tok = Tokenizer.load(build / "tokenizer.json")
    out = []
    for rank in range(world):
        with ShardLoader(build, tok, image_size, batch_per_rank, seed, rank, world, subset=subset) as ld:
            seq = []
            for _ in range(steps):
                ld.next_batch()
                seq.append(list(ld.last_uids))
        out.append(seq)
    return out


def assert_exact_resume(run_dir: Path, expected: list[list[list[str]]]) -> None:
    """Every rank trained on exactly the uninterrupted sequence, a step redone after the resume
    included; each step began from the same RNG state both times it ran (the rank's own state was
    restored), and at every step the ranks' RNG states differ (none took another rank's)."""
    from training.run_dir import RunDir

    redone, states = 0, []
    for rank, want in enumerate(expected):
        recs = RunDir(run_dir).read_samples(rank)
        steps = [r["step"] for r in recs]
        assert sorted(set(steps)) == list(range(1, len(want) + 1)), (rank, steps)
        rng: dict[int, set] = {}
        for r in recs:
            assert r["uids"] == want[r["step"] - 1], f"rank {rank} step {r['step']}: not the uninterrupted run's samples"
            rng.setdefault(r["step"], set()).add(r["rng"])
        assert all(len(v) == 1 for v in rng.values()), f"rank {rank}: a redone step began from another RNG state"
        redone += len(steps) - len(set(steps))
        states.append({s: next(iter(v)) for s, v in rng.items()})
    assert redone > 0, "no step was redone: the kill did not land between a checkpoint and the next"
    for step in states[0]:
        assert len({st[step] for st in states}) == len(expected), f"step {step}: two ranks share one RNG state"


def pytest_unconfigure(config):
    """Stop the temporary Prefect API server that in-process flows started, and remove this worker's
    Prefect home. Prefect stops the server from an exit hook, but a pytest-xdist worker may end
    without running exit hooks: the server was left running, orphaned, after `make test`.
    Prefect logs the stop to a console whose stream pytest has already closed; Python's logging would
    print that as a "--- Logging error ---" traceback after the summary, which says nothing about the tests."""
    import logging
    import shutil
    import sys

    logging.raiseExceptions = False
    server = sys.modules.get("prefect.server.api.server")
    if server is not None:
        temporary = server.SubprocessASGIServer()  # the one Prefect starts when no API URL is set
        if temporary.running:
            temporary.stop()
    if _OWN_PREFECT_HOME:
        shutil.rmtree(_OWN_PREFECT_HOME, ignore_errors=True)
