"""The build-wit flow: vocabulary -> candidates -> match -> balance -> download -> manifest.

    prefect deployment run build-wit/sample        # on the local stack (openwit up)
    openwit build data_specs/sample.yaml           # in-process, ephemeral Prefect

Each step is a plain function in tasks/build_stages.py; the Prefect task around it only names
it, retries where I/O can fail, and publishes an artifact. A step whose completion marker
matches its inputs is skipped, so a rerun after a crash redoes only what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks import build_stages
from tasks.specs import BuildSpec, load_spec


def _md_table(d: dict, head: tuple[str, str] = ("key", "value")) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in d.items() if not isinstance(v, (dict, list)))
    return f"| {head[0]} | {head[1]} |\n|---|---|\n{rows}"


@task(name="build-stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def run_stage(ctx: build_stages.BuildContext, stage: str) -> dict:
    logger = get_run_logger()
    ctx.log = logger.info
    stats, skipped = build_stages.run_stage(ctx, stage)
    key = f"{ctx.spec.name}-{stage}".lower().replace("_", "-")
    summary = {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}
    create_markdown_artifact(key=key, markdown=f"## {stage}{' (cached)' if skipped else ''}\n\n{_md_table(summary)}\n\n"
                             f"```json\n{json.dumps(stats, indent=1, default=str)[:20000]}\n```", description=f"build-wit {stage}")
    logger.info(f"{stage}: {'skipped (complete)' if skipped else 'done'} {summary}")
    return stats


@flow(name="build-wit", log_prints=True)
def build_wit(spec: str | dict[str, Any] = "data_specs/sample.yaml", out: str | None = None,
              stages: list[str] | None = None) -> dict:
    """Build CLIP's WIT dataset from a spec (a path under data_specs/ or a mapping)."""
    s: BuildSpec = load_spec(spec, BuildSpec)  # fails before any work, with one clear line
    ctx = build_stages.make_context(s, Path(out).resolve() if out else None, log=get_run_logger().info)
    wanted = stages or build_stages.STAGES
    results = {}
    for stage in build_stages.STAGES:
        if stage in wanted:
            results[stage] = run_stage(ctx, stage)
    manifest = ctx.out / "manifest.json"
    if manifest.exists() and "manifest" in wanted:
        m = json.loads(manifest.read_text())
        create_table_artifact(key=f"{s.name}-shards".lower(), table=m["shards"][:200], description="training shards")
        create_markdown_artifact(key=f"{s.name}-datacard".lower(), markdown=(ctx.out / "datacard.md").read_text(),
                                 description=f"data card: {ctx.out / 'datacard.md'}")
    return {"out": str(ctx.out), "stages": list(results)}
