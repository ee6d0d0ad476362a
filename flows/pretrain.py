"""The pretrain flow: CLIP on a build's shards with Ray Train workers, tracked in MLflow.

    prefect deployment run pretrain/sample        # on the local stack
    openwit pretrain data_specs/pretrain-sample.yaml

spec -> typed config (flows/configs.py, which opens or reopens the run's MLflow run) -> one call
(training.train_loop.run_training) -> an artifact with the run link and final metrics. Rerunning
the flow for the same `output_dir` resumes from the last checkpoint; a spec with `stages`
(Chinese-CLIP: the image tower locked, then everything unlocked) runs them in order, each its own
MLflow run nested under the run, and a rerun skips finished stages.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from flows.configs import FlowRunInfo, prefect_ui_url, train_config
from tasks.specs import PretrainSpec, load_spec, spec_hash
from training.config import TrainConfig
from training.run_dir import RunDir


@task(name="train", retries=0)
def train(cfg: TrainConfig) -> dict:
    """Ray Train on the workers; their progress lines (step, loss, samples/s, data-wait, ETA)
    reach the terminal through Ray and the Prefect logs through this task."""
    from training.train_loop import run_training

    logger = get_run_logger()
    stop = threading.Event()
    relays = [threading.Thread(target=_relay_progress, args=(f, logger, stop), daemon=True)
              for f in [RunDir(cfg.run_dir).progress_log] + [RunDir(cfg.run_dir).stage(i, st.name).progress_log
                                                             for i, st in enumerate(cfg.stages)]]
    for r in relays:
        r.start()
    try:
        return run_training(cfg, log=logger.info)
    finally:
        stop.set()
        for r in relays:
            r.join(timeout=5)


def _relay_progress(path: Path, logger, stop: threading.Event, every: float = 2.0) -> None:
    """Log the lines rank 0 appends to `progress.log` (from where the file ends now)."""
    pos = path.stat().st_size if path.exists() else 0
    while True:
        done = stop.wait(every)
        if path.exists():
            with open(path) as f:
                f.seek(pos)
                for line in f.read().splitlines():
                    logger.info(line)
                pos = f.tell()
        if done:
            return


def _run_name() -> str:
    """Flow runs are named after their spec, not a random pair of words."""
    spec = runtime.flow_run.parameters.get("spec")
    name = spec.get("name", "mapping") if isinstance(spec, dict) else Path(str(spec)).stem
    return f"{name}-{runtime.flow_run.scheduled_start_time.strftime('%Y%m%d-%H%M%S')}"


@flow(name="pretrain", flow_run_name=_run_name, log_prints=True)
def pretrain(spec: str | dict[str, Any] = "data_specs/pretrain-sample.yaml") -> dict:
    """Pretrain CLIP from a spec (a path under data_specs/ or a mapping)."""
    from training import tracking

    s: PretrainSpec = load_spec(spec, PretrainSpec)
    cfg = train_config(s, FlowRunInfo(str(runtime.flow_run.id or ""), str(runtime.flow_run.name or ""), prefect_ui_url()),
                       log=get_run_logger().warning)
    uri, run_id = cfg.tracking.uri, cfg.tracking.run_id
    steps = " + ".join(f"{st.steps} ({st.name})" for st in cfg.stages) if cfg.stages else str(cfg.schedule.steps)
    get_run_logger().info(f"MLflow run {run_id} at {uri}; training {steps} steps on {cfg.scaling.workers} workers")
    try:
        metrics = train(cfg)
    except BaseException as e:  # the MLflow run tells the truth: FAILED, or KILLED when stopped
        tracking.end_run(uri, run_id, tracking.end_status(e))
        raise
    tracking.end_run(uri, run_id, "FINISHED")
    link = tracking.run_url(uri, run_id)
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    create_markdown_artifact(key=f"pretrain-{s.name}".lower(), markdown=f"## pretrain {s.name}\n\nMLflow: {link}\n\n| metric | value |\n|---|---|\n{table}\n",
                             description="final zero-shot metrics")
    return {"run_id": run_id, "metrics": metrics, "run_dir": str(cfg.run_dir), "spec_hash": spec_hash(s), "tracking_uri": uri,
            "pid": os.getpid()}
