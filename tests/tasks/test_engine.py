"""The stage engine: skip when done, resume from finished units, start over for other inputs,
typed stats with named reasons, and no stage reads a folder it did not declare."""

from types import SimpleNamespace

import pytest
from pydantic import Field

from tasks import engine
from tasks.engine import Stage, Stats, mark_unit, unit_stats


def _ctx(tmp_path, cfg="a"):
    return SimpleNamespace(out=tmp_path, log=lambda *_: None, cfg=cfg)


class UnitStats(Stats):
    """A stage's typed stats: what a report needs, as fields (never a dict of strings)."""

    units: list[str] = Field(default_factory=list)


def _stage(calls, fail_after=None, name="download", reads=(), owns=("shards",)):
    def fn(run):
        done = []
        for unit in ("u0", "u1", "u2"):
            if unit_stats(run.dir, unit) is None:
                if fail_after is not None and len(calls) >= fail_after:
                    raise RuntimeError("crash")
                calls.append(unit)
                (run.out / "shards").mkdir(exist_ok=True)
                (run.out / "shards" / f"{unit}.parquet").write_text(unit)
                mark_unit(run.dir, unit, Stats(rows_in=10, rows_out=9, dropped={"http_404": 1}))
            done.append(unit_stats(run.dir, unit))
        total = UnitStats(units=["u0", "u1", "u2"])
        for s in done:
            total.add(s)
        return total

    return Stage(name, fn, reads=reads, owns=owns, config=lambda ctx: ctx.cfg, stats=UnitStats)


def test_done_is_skipped_and_stats_come_back_typed(tmp_path):
    calls = []
    stats, skipped = engine.run(_ctx(tmp_path), _stage(calls))
    assert not skipped and calls == ["u0", "u1", "u2"]
    assert (stats.rows_in, stats.rows_out, dict(stats.dropped)) == (30, 27, {"http_404": 3})
    again, skipped = engine.run(_ctx(tmp_path), _stage(calls))
    assert skipped and calls == ["u0", "u1", "u2"] and again.to_dict() == stats.to_dict()
    back = engine.stage_stats(tmp_path, _stage(calls))
    assert isinstance(back, UnitStats) and back.rows_out == 27 and back.units == ["u0", "u1", "u2"]
    with pytest.raises(ValueError, match="extra"):  # a stats file with a field the type does not know is refused
        UnitStats.from_dict({**stats.to_dict(), "info": {"t": 3}})


def test_a_crashed_stage_resumes_from_its_finished_units(tmp_path):
    calls = []
    with pytest.raises(RuntimeError):
        engine.run(_ctx(tmp_path), _stage(calls, fail_after=2))
    assert engine.read_marker(tmp_path / "download")["state"] == "started"
    engine.run(_ctx(tmp_path), _stage(calls))
    assert calls == ["u0", "u1", "u2"]  # u0, u1 were not redone


def test_other_inputs_remove_every_output_first(tmp_path):
    calls = []
    engine.run(_ctx(tmp_path, "a"), _stage(calls))
    (tmp_path / "download" / "stale.txt").write_text("made for a")
    engine.run(_ctx(tmp_path, "b"), _stage(calls))  # a new spec section: start over, owned outputs too
    assert calls == ["u0", "u1", "u2"] * 2
    assert not (tmp_path / "download" / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["u0.parquet", "u1.parquet", "u2.parquet"]


def test_an_upstream_change_reruns_the_stages_that_read_it(tmp_path):
    calls = []
    up = Stage("balance", lambda run: Stats(rows_out=1), config=lambda ctx: ctx.cfg)
    engine.run(_ctx(tmp_path, "a"), up)
    engine.run(_ctx(tmp_path, "a"), _stage(calls, reads=("balance",)))
    engine.run(_ctx(tmp_path, "b"), up)
    ctx = _ctx(tmp_path, "a")
    _stats, skipped = engine.run(ctx, _stage(calls, reads=("balance",)))
    assert not skipped and len(calls) == 6


def test_new_rules_remake_a_stage_and_the_stages_after_it(tmp_path):
    """An upgrade that changes what a stage writes for the same spec (Stage.version) is not served
    the outputs of the old rules; version 1 keeps the keys builds had before versions existed."""
    import dataclasses

    calls, up = [], Stage("candidates", lambda run: Stats(rows_out=1), config=lambda ctx: ctx.cfg)
    old_key = engine.stage_key(_ctx(tmp_path), up)
    engine.run(_ctx(tmp_path), up)
    engine.run(_ctx(tmp_path), _stage(calls, reads=("candidates",)))
    assert engine.run(_ctx(tmp_path), up)[1]  # same rules: cached
    new_rules = dataclasses.replace(up, version=2)
    assert engine.stage_key(_ctx(tmp_path), new_rules) != old_key
    assert not engine.run(_ctx(tmp_path), new_rules)[1]  # remade
    _stats, skipped = engine.run(_ctx(tmp_path), _stage(calls, reads=("candidates",)))
    assert not skipped and len(calls) == 6  # and the stage that reads it too


def test_outputs_from_before_the_engine_are_not_trusted(tmp_path):
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest.json").write_text("{}")
    engine.run(_ctx(tmp_path), Stage("manifest", lambda run: Stats(), owns=("manifest.json",)))
    assert not (tmp_path / "manifest.json").exists()


def test_undeclared_reads_and_unknown_reasons_fail_loudly(tmp_path):
    def sneaky(run):
        run.input("matches")
        return Stats()

    with pytest.raises(RuntimeError, match="without declaring"):
        engine.run(_ctx(tmp_path), Stage("download", sneaky, reads=("match",)))
    with pytest.raises(KeyError, match="tasks/reasons.py"):
        Stats().drop("because")
