"""The build-wit flow: vocabulary -> candidates -> match -> balance -> download -> manifest.

    prefect deployment run build-wit/sample        # on the local stack (openwit up)
    openwit build data_specs/sample.yaml           # in-process, ephemeral Prefect

Each step is a plain function in tasks/stages.py run by the stage engine (tasks/engine.py);
the Prefect task around it only names it, logs one summary line, publishes an artifact, and
reports a stage the engine found complete as a `Cached` state. It retries only errors that a
retry can change (I/O), never a deterministic one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed

from tasks import stages as build_stages
from tasks.context import BuildContext, make_context
from tasks.download.guard import GuardInactive
from tasks.engine import Stats
from tasks.specs import BuildSpec, SpecError, load_spec

SHOWN_REASONS = 6  # drop reasons named in a summary line; the rest are counted as "and N more"


def summary_line(stage: str, stats: Stats, skipped: bool) -> str:
    """`<stage> N in -> M out; dropped D (reason n, ...)`: every reason, or the first few and
    `and K more reasons n (names)`, so the numbers add up to D."""
    reasons = stats.dropped.most_common()
    shown = ", ".join(f"{r} {n:,}" for r, n in reasons[:SHOWN_REASONS])
    rest = reasons[SHOWN_REASONS:]
    if rest:
        shown += f", and {len(rest)} more reasons {sum(n for _, n in rest):,} ({', '.join(r for r, _ in rest)})"
    return (f"{stage:10s} {stats.rows_in:>10,} in -> {stats.rows_out:>10,} out"
            + (f"; dropped {sum(stats.dropped.values()):,} ({shown})" if stats.dropped else "")
            + (" [cached]" if skipped else ""))


def _retry_io_only(task, task_run, state) -> bool:
    """Retry a stage only when it failed on I/O (a network or disk hiccup); anything else would
    fail again the same way."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, (FileNotFoundError, PermissionError))


@task(name="build-stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5, retry_condition_fn=_retry_io_only)
def run_stage(ctx: BuildContext, stage: str):
    logger = get_run_logger()
    ctx.log = logger.info
    try:
        stats, skipped = build_stages.run_stage(ctx, stage)
    except (build_stages.EmptyStageError, SpecError, GuardInactive) as e:  # the user's to fix: one line, no retry
        sys.stderr.write(f"openwit build: {e}\n")
        return Failed(message=str(e))
    line = summary_line(stage, stats, skipped)
    logger.info(line)  # the Prefect UI
    sys.stderr.write(line + "\n")  # the terminal of `openwit build` (which keeps Prefect's own chatter at WARNING)
    create_markdown_artifact(key=f"{ctx.spec.name}-{stage}".lower().replace("_", "-"),
                             markdown=f"## {stage}{' (cached)' if skipped else ''}\n\n`{line.strip()}`\n\n"
                                      f"```json\n{json.dumps(stats.to_dict(), indent=1, default=str)[:20000]}\n```",
                             description=f"build-wit {stage}")
    if skipped:
        return Completed(name="Cached", message=f"{stage} is complete for these inputs (engine key)", data=stats.to_dict())
    return stats.to_dict()


def _run_name() -> str:
    """Flow runs are named after their spec (`build-wit/sample-…`), not a random pair of words."""
    from prefect.runtime import flow_run

    spec = flow_run.parameters.get("spec")
    name = spec.get("name", "mapping") if isinstance(spec, dict) else Path(str(spec)).stem
    return f"{name}-{flow_run.scheduled_start_time.strftime('%Y%m%d-%H%M%S')}"


@flow(name="build-wit", flow_run_name=_run_name, log_prints=True)
def build_wit(spec: str | dict[str, Any] = "data_specs/sample.yaml", out: str | None = None,
              stages: list[str] | None = None) -> dict:
    """Build CLIP's WIT dataset from a spec (a path under data_specs/ or a mapping)."""
    from prefect.runtime import flow_run

    s: BuildSpec = load_spec(spec, BuildSpec)  # fails before any work, with one clear line
    ctx = make_context(s, Path(out).resolve() if out else None, log=get_run_logger().info)
    ctx.flow_run_id = str(flow_run.id) if flow_run.id else None  # the manifest links a training run back to this run
    wanted = stages or build_stages.STAGES
    results = {}
    for stage in build_stages.STAGES:
        if stage in wanted:
            state = run_stage(ctx, stage, return_state=True)
            if state.is_failed():
                return Failed(message=state.message)
            results[stage] = state.result()
    manifest = ctx.out / "manifest.json"
    if manifest.exists() and "manifest" in wanted:
        m = json.loads(manifest.read_text())
        create_table_artifact(key=f"{s.name}-shards".lower(), table=m["shards"][:200], description="training shards")
        from tasks.manifest.datacard import inline_images

        create_markdown_artifact(key=f"{s.name}-datacard".lower(), markdown=inline_images((ctx.out / "datacard.md").read_text(), ctx.out),
                                 description=f"data card: {ctx.out / 'datacard.md'}")
    return {"out": str(ctx.out), "stages": list(results)}
