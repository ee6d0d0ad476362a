"""The pretrain flow: CLIP on a build's shards with Ray Train workers, tracked in MLflow.

    prefect deployment run pretrain/sample        # on the local stack
    openwit pretrain data_specs/pretrain-sample.yaml

The flow resolves the spec, opens (or reopens) the MLflow run for this training run, starts or
attaches Ray, runs the trainer, and publishes an artifact with the run link and final metrics.
Rerunning the flow for the same `output_dir` resumes from the last checkpoint. A spec with
`stages` (Chinese-CLIP: the image tower locked, then everything unlocked) runs them in order,
each its own MLflow run nested under the run; a rerun skips finished stages and resumes the
unfinished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from tasks.specs import PretrainSpec, load_spec, spec_hash
from training.run import FlowRunInfo, mark_stage_done, prefect_ui_url, prepare_run, stage_config


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


def run_stages(s: PretrainSpec, config: dict, open_runs: list[str]) -> dict:
    """Each stage in order, as its own nested MLflow run, in one Ray session; finished stages
    (`stage_done.json`) are skipped. Returns the last stage's final metrics, also logged to the run."""
    from training import tracking
    from training.train_loop import ray_session

    logger = get_run_logger()
    uri = config["mlflow"]["uri"]
    done = lambda i: (Path(config["run_dir"]) / f"stage-{i + 1}-{s.stages[i].name}" / "stage_done.json")
    todo = [i for i in range(len(s.stages)) if not done(i).exists()]
    with ray_session(s.scaling.model_dump(), s.scaling.address) if todo else contextlib.nullcontext():  # one Ray for all stages
        for i, st in enumerate(s.stages):
            if i not in todo:
                logger.info(f"stage {i + 1} ({st.name}) finished earlier; skipping it")
                continue
            stage = stage_config(config, s, i)
            open_runs.append(stage["mlflow"]["run_id"])
            logger.info(f"stage {i + 1}/{len(s.stages)} ({st.name}): {st.steps} steps"
                        + (", image tower locked" if st.lock_image else "") + f"; MLflow run {stage['mlflow']['run_id']}")
            mark_stage_done(stage, train(stage, s.scaling.model_dump(), s.scaling.address))
            tracking.end_run(uri, open_runs.pop(), "FINISHED")
    metrics = json.loads(done(len(s.stages) - 1).read_text())
    tracking.log_final(uri, config["mlflow"]["run_id"], metrics)
    return metrics


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
    steps = " + ".join(f"{st.steps} ({st.name})" for st in s.stages) if s.stages else str(s.train.steps)
    logger.info(f"MLflow run {config['mlflow']['run_id']} at {config['mlflow']['uri']}; training {steps} steps "
                f"on {s.scaling.workers} workers")
    from training import tracking

    open_runs = [config["mlflow"]["run_id"]]
    try:
        metrics = run_stages(s, config, open_runs) if s.stages else train(config, s.scaling.model_dump(), s.scaling.address)
    except BaseException as e:  # the MLflow run tells the truth: FAILED, or KILLED when stopped
        status = "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) or type(e).__name__ in ("TerminationSignal", "CancelledRun") else "FAILED"
        for run_id in open_runs:
            tracking.end_run(config["mlflow"]["uri"], run_id, status)
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
