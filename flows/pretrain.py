"""The pretrain flow: CLIP on a build's shards with Ray Train workers, tracked in MLflow.

    prefect deployment run pretrain/sample        # on the local stack
    openwit pretrain data_specs/pretrain-sample.yaml

The flow resolves the spec, opens (or reopens) the MLflow run for this training run, starts or
attaches Ray, runs the trainer, and publishes an artifact with the run link and final metrics.
Rerunning the flow for the same `output_dir` resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from tasks.specs import PretrainSpec, load_spec, spec_hash
from training.run import FlowRunInfo, prefect_ui_url, prepare_run


@task(name="train", retries=0)
def train(config: dict, scaling: dict, address: str | None) -> dict:
    """Ray Train on the workers; their progress lines (step, loss, samples/s, data-wait, ETA)
    reach the terminal through Ray and the Prefect logs through this task."""
    from training.train_loop import run_training

    stop = threading.Event()
    relay = threading.Thread(target=_relay_progress, args=(Path(config["run_dir"]) / "progress.log", get_run_logger(), stop), daemon=True)
    relay.start()
    try:
        return run_training(config, scaling, address, config["storage"])
    finally:
        stop.set()
        relay.join(timeout=5)


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
    s: PretrainSpec = load_spec(spec, PretrainSpec)
    logger = get_run_logger()
    config = prepare_run(s, FlowRunInfo(str(runtime.flow_run.id or ""), str(runtime.flow_run.name or ""), prefect_ui_url()))
    logger.info(f"MLflow run {config['mlflow']['run_id']} at {config['mlflow']['uri']}; training {s.train.steps} steps "
                f"on {s.scaling.workers} workers")
    from training import tracking

    try:
        metrics = train(config, s.scaling.model_dump(), s.scaling.address)
    except BaseException as e:  # the MLflow run tells the truth: FAILED, or KILLED when stopped
        status = "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) or type(e).__name__ in ("TerminationSignal", "CancelledRun") else "FAILED"
        tracking.end_run(config["mlflow"]["uri"], config["mlflow"]["run_id"], status)
        raise
    tracking.end_run(config["mlflow"]["uri"], config["mlflow"]["run_id"], "FINISHED")
    uri = config["mlflow"]["uri"]
    from mlflow.tracking import MlflowClient

    link = tracking.run_url(uri, MlflowClient(uri), config["mlflow"]["run_id"])
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    create_markdown_artifact(key=f"pretrain-{s.name}".lower(), markdown=f"## pretrain {s.name}\n\nMLflow: {link}\n\n| metric | value |\n|---|---|\n{table}\n",
                             description="final zero-shot metrics")
    return {"run_id": config["mlflow"]["run_id"], "metrics": metrics, "run_dir": config["run_dir"], "spec_hash": spec_hash(s),
            "tracking_uri": uri, "pid": os.getpid()}
