"""The build's stage engine: keys, markers, atomic writes, typed stats and resume, in one place.

A stage is declared (`Stage`): its name, the stages whose outputs it reads, the outputs it owns
outside its own folder, the part of the spec that keys it, and a plain function that does the
work and returns `Stats`. The engine, not the stage, decides whether to run it:

    key   = hash(stage name, its spec section and inputs, the keys of the stages it reads,
                 its rules version: bumped by a code change that changes what the stage writes)
    <stage>/_stage.json = {"key", "state": "started" | "done", "stats"}     (the only marker)

  * state done, same key     -> skipped; its stats are returned as they were ("cached")
  * state started, same key  -> resumed: work units already marked done are kept
  * anything else            -> every output of the stage is removed, then it runs

Inside a stage, a unit of work (one WARC file, one dump part, one shard) writes its outputs with
`atomic(path)` and then `mark_unit(stage_dir, name, stats)`; `unit_stats` finds finished units
on a rerun. Both are plain functions, so parallel workers (processes, Ray tasks) call them.
A stage reads another stage's folder only through `StageRun.input(name)`, which refuses a stage
it did not declare: a stage that reaches into a folder it did not ask for fails loudly instead
of reading nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tasks.reasons import REASONS

MARKER = "_stage.json"


# ----------------------------------------------------------------------------- typed stats
class Stats(BaseModel):
    """What a stage (or a unit of it) did: rows in and out, drops by named reason, other counts
    (`counts`, e.g. img_tags). A stage with more to report declares a subclass with typed fields
    (`BalanceStats`, `DownloadStats`, ...); the engine stores it in the stage's marker and gives it
    back typed (`stage_stats`)."""

    model_config = ConfigDict(extra="forbid")

    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter[str] = Field(default_factory=Counter)
    counts: Counter[str] = Field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        if reason not in REASONS:
            raise KeyError(f"unknown drop reason {reason!r}: add it with its explanation to tasks/reasons.py")
        if n:
            self.dropped[reason] += n

    def add(self, other: Stats) -> Stats:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.counts.update(other.counts)
        return self

    def to_dict(self) -> dict:
        d = self.model_dump(mode="json")
        d["dropped"], d["counts"] = dict(sorted(self.dropped.items())), dict(sorted(self.counts.items()))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        return cls.model_validate(d)


S = TypeVar("S", bound=Stats)


# ----------------------------------------------------------------------------- atomic outputs
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


def write_json(path: Path, data: Any) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


def _unit_file(stage_dir: Path, name: str) -> Path:
    return stage_dir / "_units" / f"{name}.json"


def mark_unit(stage_dir: Path, name: str, stats: S) -> S:
    """Record a finished unit of work (after its outputs were written atomically)."""
    write_json(_unit_file(stage_dir, name), stats.to_dict())
    return stats


def unit_stats(stage_dir: Path, name: str, cls: type[S] = Stats) -> S | None:
    f = _unit_file(stage_dir, name)
    return cls.from_dict(json.loads(f.read_text())) if f.exists() else None


# ----------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[StageRun], Stats]
    reads: tuple[str, ...] = ()  # stages whose outputs it reads
    owns: tuple[str, ...] = ()  # outputs outside <build>/<name>/ (removed with the stage's)
    config: Callable[[Any], Any] = lambda ctx: None  # the spec section and inputs that key it
    stats: type[Stats] = Stats  # what fn returns (a typed subclass for stages that report more)
    # the stage's rules: a change to the code that changes what it writes for the same spec (a new
    # language-ID rule) bumps it, so a rerun after an upgrade remakes the stage and those after it
    # instead of trusting outputs made by the old rules; 1 leaves the key as it was before versions
    version: int = 1


@dataclass
class StageRun:
    """What a stage function gets: the build context, its folder and its declared inputs."""

    ctx: Any
    stage: Stage
    dir: Path
    key: str

    @property
    def out(self) -> Path:
        return self.ctx.out

    def input(self, name: str) -> Path:
        if name not in self.stage.reads:
            raise RuntimeError(f"stage {self.stage.name} reads {name}/ without declaring it (Stage.reads)")
        return self.ctx.out / name

    def log(self, msg: str) -> None:
        self.ctx.log(msg)


def read_marker(stage_dir: Path) -> dict | None:
    m = stage_dir / MARKER
    return json.loads(m.read_text()) if m.exists() else None


def stage_key(ctx: Any, stage: Stage) -> str:
    upstream = [(name, (read_marker(ctx.out / name) or {}).get("key")) for name in stage.reads]
    parts = [stage.name, stage.config(ctx), upstream] + ([stage.version] if stage.version != 1 else [])
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(ctx: Any, stage: Stage) -> tuple[Stats, bool]:
    """Run `stage` unless it is done for the same inputs; returns (stats, skipped)."""
    d = ctx.out / stage.name
    key = stage_key(ctx, stage)
    marker = read_marker(d)
    if marker and marker["key"] == key and marker["state"] == "done":
        return stage.stats.from_dict(marker["stats"]), True
    if not (marker and marker["key"] == key):  # made for other inputs, or never claimed: start over
        if d.exists():
            if marker:
                ctx.log(f"{stage.name}: outputs in {d} were made for other inputs; removing them")
            shutil.rmtree(d)
        for name in stage.owns:
            p = ctx.out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / MARKER, {"key": key, "state": "started", "stats": None})
    stats = stage.fn(StageRun(ctx, stage, d, key))
    write_json(d / MARKER, {"key": key, "state": "done", "stats": stats.to_dict()})
    return stats, False


def stage_stats(build: Path, stage: Stage) -> Stats | None:
    """The typed stats of a finished stage of a build (None if it has not finished)."""
    m = read_marker(build / stage.name)
    return stage.stats.from_dict(m["stats"]) if m and m["state"] == "done" else None
