"""The one owner of a pretrain run's folder: its layout, stage folders, run ids, markers, writes.

    <run_dir>/mlflow_run_id        the MLflow run this folder belongs to (a rerun continues it)
    <run_dir>/data.json            the data it trains on (build, fingerprint of shards + tokenizer, subset)
    <run_dir>/progress.log         rank 0's progress lines (the flow relays them to Prefect)
    <run_dir>/tokenizer.json       the tokenizer, when it is not the build's (BERT-Chinese, init_from's)
    <run_dir>/model/               the final model (model.safetensors + config.json)
    <run_dir>/samples/rank-R.jsonl each step's sample uids per rank (data.record_samples)
    <run_dir>/ray/                 Ray Train's checkpoints (unless checkpoint.storage says elsewhere)
    <run_dir>/stage-K-<name>/      a staged run's stage K: the same layout, plus stage_done.json

Flows, `evaluate` and the demo go through `RunDir`; nobody else spells these names. Every file
is written with `atomic` (a temporary name, renamed on success), so a crash never leaves a
half-written marker that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # -- files -------------------------------------------------------------------------
    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def progress_log(self) -> Path:
        return self.path / "progress.log"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def ray_storage(self) -> Path:
        return self.path / "ray"

    def samples(self, rank: int) -> Path:
        return self.path / "samples" / f"rank-{rank}.jsonl"

    # -- the MLflow run ----------------------------------------------------------------
    @property
    def mlflow_run_id(self) -> str | None:
        f = self.path / "mlflow_run_id"
        return f.read_text().strip() or None if f.exists() else None

    def set_mlflow_run_id(self, run_id: str) -> None:
        write_text(self.path / "mlflow_run_id", run_id)

    @classmethod
    def of_model(cls, model_folder: Path) -> RunDir | None:
        """The run a model folder (`<run_dir>/model`) was trained in, if it was trained here."""
        run = cls(Path(model_folder).parent)
        return run if Path(model_folder).resolve() == run.model and run.mlflow_run_id else None

    # -- the data it trains on ---------------------------------------------------------
    @property
    def data_record(self) -> dict | None:
        """The data this run trains on (written when it starts): build, fingerprint, subset."""
        f = self.path / "data.json"
        return json.loads(f.read_text()) if f.exists() else None

    def set_data_record(self, record: dict) -> None:
        write_text(self.path / "data.json", json.dumps(record, indent=1))

    def set_aside(self, suffix: str) -> Path:
        """Rename this run's folder to `<folder>.<suffix>` (nothing is deleted); returns the new path."""
        aside = self.path.with_name(f"{self.path.name}.{suffix}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.{suffix}-{n}")
        self.path.rename(aside)
        return aside

    # -- stages ------------------------------------------------------------------------
    def stage(self, index: int, name: str) -> RunDir:
        """Stage `index` (0-based) of a staged run."""
        return RunDir(self.path / f"stage-{index + 1}-{name}")

    @property
    def stage_metrics(self) -> dict | None:
        """The final metrics of a finished stage (None while it is not finished)."""
        f = self.path / "stage_done.json"
        return json.loads(f.read_text()) if f.exists() else None

    def mark_stage_done(self, metrics: dict) -> None:
        write_text(self.path / "stage_done.json", json.dumps(metrics, indent=1, default=float))

    # -- appended logs -----------------------------------------------------------------
    def append_progress(self, line: str) -> None:
        with open(self.progress_log, "a") as f:
            f.write(line + "\n")

    def record_samples(self, rank: int, step: int, uids: list[str], rng: int) -> None:
        """One line per step: the uids this rank trained on and a digest of its RNG state before
        the step (a resumed run appends the steps it redoes)."""
        f = self.samples(rank)
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "a") as fh:
            fh.write(json.dumps({"step": step, "uids": uids, "rng": rng}) + "\n")

    def read_samples(self, rank: int) -> list[dict]:
        """Every record of a rank, in the order written: {step, uids, rng}; a step redone after a
        resume appears again."""
        f = self.samples(rank)
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
