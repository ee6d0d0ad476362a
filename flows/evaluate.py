"""The evaluate flow: a trained model on declared suites, logged to MLflow.

    prefect deployment run evaluate/sample        # on the local stack
    openwit evaluate data_specs/evaluate-sample.yaml

`checkpoint` is a folder written by `pretrain` (`<run_dir>/model`) or a registered MLflow model
(`models:/<name>/<version>`). Metrics go into the training run when the spec names `run_id`, and
otherwise into a new run nested under the training run (found from the checkpoint's folder), so
they sit next to the metrics `pretrain` logged during training, under the same names
(`zeroshot/<suite>/top1`, `retrieval/<suite>/i2t_recall_at_5`, `linprobe/<suite>/top1`).
Class text embeddings are cached on disk per (model weights, suite).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.datacard import sha256_file
from tasks.specs import EvaluateSpec, load_spec, state_dir
from tasks.suites import resolve_suites
from training.checkpoint import checkpoint_folder  # noqa: F401 - where the CLI and tests find it


def source_run_id(folder: Path) -> str | None:
    """The training run a checkpoint folder came from (`pretrain` writes `<run_dir>/mlflow_run_id`)."""
    f = folder.parent / "mlflow_run_id"
    return f.read_text().strip() if f.exists() else None


@task(name="evaluate-suite", task_run_name="{suite[name]}")
def evaluate_suite(folder: Path, weights_sha: str, suite: dict, cache_dir: Path) -> tuple[dict, dict, float]:
    """(metrics, artifacts, images/s) for one suite; class embeddings cached per (weights, suite)."""
    import torch
    from safetensors.torch import load_file, save_file

    from training.checkpoint import load_model
    from training.eval_data import run_suite
    from training.eval_report import suite_data

    model, tok, pre = load_model(folder)
    key = (weights_sha, suite["name"])
    suite_key = hashlib.sha256(json.dumps([suite.get("classnames"), suite.get("templates")], sort_keys=True).encode()).hexdigest()[:12]
    cache_file = cache_dir / key[0] / f"{suite['name']}-{suite_key}.safetensors"
    cache = {key: load_file(str(cache_file))["classes"]} if cache_file.exists() else {}
    data = suite_data(suite)
    t0 = time.perf_counter()
    with torch.inference_mode():
        metrics, artifacts = run_suite(model, tok, suite, data, pre["image_size"], cache, model_key=key[0])
    rate = len(data.images) / max(time.perf_counter() - t0, 1e-9)
    if key in cache and not cache_file.exists():
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"classes": cache[key].contiguous()}, str(cache_file))
    return metrics, artifacts, rate


@flow(name="evaluate", log_prints=True)
def evaluate(spec: str | dict[str, Any] = "data_specs/evaluate-sample.yaml") -> dict:
    """Evaluate a checkpoint or a registered MLflow model on the spec's suites."""
    from mlflow.tracking import MlflowClient

    from training import tracking
    from training.eval_report import log_eval_artifacts

    s: EvaluateSpec = load_spec(spec, EvaluateSpec)
    logger = get_run_logger()
    uri = tracking.tracking_uri(s.mlflow.tracking_uri, state_dir())
    suites = resolve_suites(s.suites)
    folder = checkpoint_folder(s.checkpoint, uri)
    weights_sha = sha256_file(folder / "model.safetensors")[:16]
    step = int(json.loads((folder / "config.json").read_text()).get("extra", {}).get("step", 0))
    client = MlflowClient(uri)
    run_id = s.run_id
    if run_id is None:
        parent = source_run_id(folder)
        exp = client.get_experiment_by_name(s.mlflow.experiment) or client.get_experiment(client.create_experiment(s.mlflow.experiment))
        tags = {"openwit.checkpoint": s.checkpoint, "openwit.kind": "evaluate"}
        if parent:
            tags.update({"mlflow.parentRunId": parent, "openwit.source_run_id": parent})
        run_id = client.create_run(exp.experiment_id, run_name=f"eval-{s.name}", tags=tags).info.run_id
        client.log_param(run_id, "checkpoint", s.checkpoint)
        client.log_param(run_id, "suites", json.dumps([x["name"] for x in suites]))
    all_metrics, rates = {}, {}
    for suite in suites:
        metrics, artifacts, rate = evaluate_suite(folder, weights_sha, suite, state_dir() / "cache" / "class-embeddings")
        for k, v in metrics.items():
            client.log_metric(run_id, k, float(v), step=step)
        log_eval_artifacts(client, run_id, suite["name"], artifacts)
        all_metrics.update(metrics)
        rates[suite["name"]] = rate
        logger.info(f"{suite['name']}: " + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in metrics.items()) + f" ({rate:.0f} images/s)")
    if s.run_id is None:
        client.set_terminated(run_id)
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(all_metrics.items()))
    create_markdown_artifact(key=f"evaluate-{s.name}".lower(), markdown=f"## evaluate {s.name}\n\ncheckpoint `{s.checkpoint}` (step {step}), "
                             f"MLflow run `{run_id}` at {uri}\n\n| metric | value |\n|---|---|\n{table}\n", description="evaluation metrics")
    return {"run_id": run_id, "metrics": all_metrics, "images_per_s": rates, "tracking_uri": uri}
