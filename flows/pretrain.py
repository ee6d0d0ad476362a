"""The pretrain flow: CLIP on a build's shards with Ray Train workers, tracked in MLflow.

    prefect deployment run pretrain/sample        # on the local stack
    openwit pretrain data_specs/pretrain-sample.yaml

The flow resolves the spec, opens (or reopens) the MLflow run for this training run, starts or
attaches Ray, runs the trainer, and publishes an artifact with the run link and final metrics.
Rerunning the flow for the same `output_dir` resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact

from tasks.specs import REPO_ROOT, PretrainSpec, load_spec, resolve_path, spec_hash
from tasks.suites import resolve_suites


def model_config(name: str) -> dict:
    from training.model import preset_dict

    return preset_dict(resolve_path(name) if name.endswith(".json") else name)


def init_checkpoint(spec: PretrainSpec, run_dir: Path, uri: str) -> dict:
    """Fine-tuning: the checkpoint's model config, weights and tokenizer (written into the run dir)."""
    from flows.evaluate import checkpoint_folder

    folder = checkpoint_folder(spec.init_from, uri)
    meta = json.loads((folder / "config.json").read_text())
    if not meta.get("tokenizer"):
        raise ValueError(f"init_from {folder}: the checkpoint carries no tokenizer, so its text tower cannot be fed")
    size = meta["model"]["vision_cfg"]["image_size"]
    if size != spec.data.image_size:
        raise ValueError(f"init_from {folder} was trained at {size}px but data.image_size is {spec.data.image_size}: set data.image_size: {size}")
    tok = run_dir / "init_tokenizer.json"
    tok.write_text(meta["tokenizer"])
    return {"model": meta["model"], "tokenizer": str(tok), "weights": str(folder / "model.safetensors")}


def prefect_ui_url() -> str | None:
    """The Prefect UI this flow reports to (None for an ephemeral in-process server)."""
    api = os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL")
    return api.removesuffix("/").removesuffix("/api") if api and api.startswith("http") else None


def prepare(spec: PretrainSpec) -> dict:
    """Everything the workers need, with absolute paths (Ray Train V2 workers change directory)."""
    from training import tracking

    build = resolve_path(spec.data.build)
    manifest = json.loads((build / "manifest.json").read_text())
    run_dir = resolve_path(spec.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking.tracking_uri(spec.mlflow.tracking_uri, REPO_ROOT / ".openwit")
    id_file = run_dir / "mlflow_run_id"
    resume_id = id_file.read_text().strip() if id_file.exists() else None
    init = init_checkpoint(spec, run_dir, uri) if spec.init_from else None
    mcfg = init["model"] if init else model_config(spec.model)
    tags = {"openwit.spec": spec.name, "openwit.build": manifest["name"], "openwit.build.path": str(build),
            "openwit.manifest_spec_hash": manifest["spec_hash"],
            "prefect.flow_run_id": str(runtime.flow_run.id or ""), "prefect.flow_run_name": str(runtime.flow_run.name or ""),
            **tracking.code_version(REPO_ROOT)}
    if runtime.flow_run.id and (ui := prefect_ui_url()):
        tags["prefect.flow_run_url"] = f"{ui}/runs/flow-run/{runtime.flow_run.id}"
    if manifest.get("prefect_flow_run_id"):  # the build-wit run that made the shards
        tags["openwit.build.prefect_flow_run_id"] = manifest["prefect_flow_run_id"]
        if ui := prefect_ui_url():
            tags["openwit.build.prefect_flow_run_url"] = f"{ui}/runs/flow-run/{manifest['prefect_flow_run_id']}"
    params = {"spec": spec.model_dump(mode="json"), "model_config": mcfg,
              "dataset": {"name": manifest["name"], "spec_hash": manifest["spec_hash"], "rows": manifest["totals"]["rows"]}}
    manifest["source"] = str(build / "manifest.json")
    run_id = tracking.start_run(uri, spec.mlflow.experiment, spec.name, params, tags, manifest,
                                REPO_ROOT / ".openwit" / "mlartifacts", resume_id)
    if resume_id is None:
        tracking.log_provenance(uri, run_id, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), build)
    id_file.write_text(run_id)
    threads = int(spec.scaling.resources_per_worker.get("CPU", 1))
    return {
        "run_name": spec.name, "run_dir": str(run_dir), "build": str(build), "subset": spec.data.subset,
        "image_size": spec.data.image_size,
        "tokenizer": init["tokenizer"] if init else str(build / manifest.get("tokenizer", "tokenizer.json")),
        "init_weights": init["weights"] if init else None,
        "model": mcfg, "train": spec.train.model_dump(), "use_gpu": spec.scaling.use_gpu, "threads_per_worker": threads,
        "eval_suites": resolve_suites(spec.eval_suites),
        "mlflow": {"uri": uri, "run_id": run_id, "run_dir": str(run_dir), "register_model": spec.mlflow.register_model},
    }


@task(name="train", retries=0)
def train(config: dict, scaling: dict, address: str | None) -> dict:
    from training.train_loop import read_final, run_training

    run_training(config, scaling, address, str(Path(config["run_dir"]) / "ray"))
    return read_final(Path(config["run_dir"]))


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
    config = prepare(s)
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
