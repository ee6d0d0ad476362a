"""The evaluate flow: a trained model on declared suites, logged to MLflow and as clip_benchmark JSON.

    prefect deployment run evaluate/sample        # on the local stack
    openwit evaluate data_specs/evaluate-sample.yaml

`checkpoint` is a folder written by `pretrain` (`<run_dir>/model`), an imported one, or a
registered MLflow model (`models:/<name>/<version>`). The model runs on the spec's `device`
(auto: CUDA when there is one), images decoded by `workers` processes. Metrics go into the
training run when the spec names `run_id`, and otherwise into a new run nested under the training
run (found from the checkpoint's folder), under the same names as `pretrain` logs them
(`zeroshot/<suite>/top1`, `retrieval/<suite>/i2t_recall_at_5`, `linprobe/<suite>/top1`); each
suite's results are also written in clip_benchmark's format (`results_dir`). Class text
embeddings are cached on disk per (model weights, suite).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.configs import checkpoint_folder, suite_configs
from tasks.manifest.manifest import sha256_file
from tasks.specs import EvaluateSpec, SpecError, load_spec, resolve_path, state_dir
from training.config import SuiteConfig
from training.run_dir import RunDir


def choose_device(wanted: str) -> str:
    """The spec's device: `auto` is CUDA when torch sees one; `cuda` without one fails in one line."""
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device: cuda, but torch {torch.__version__} sees no CUDA device here "
                        f"(a CPU build of torch, or no GPU); use device: auto or cpu")
    return wanted


@task(name="evaluate-suite", task_run_name="{suite.name}")
def evaluate_suite(folder: Path, weights_sha: str, suite: SuiteConfig, cache_dir: Path, device: str, workers: int,
                   batch_size: int) -> tuple[dict, dict, float]:
    """(metrics, artifacts, images/s) for one suite; class embeddings cached per (weights, suite)."""
    import torch
    from safetensors.torch import load_file, save_file

    from training.checkpoint import load_model
    from training.eval.datasets import suite_data
    from training.eval.suite import run_suite

    model, tok, pre = load_model(folder, device=device)
    suite_key = hashlib.sha256(json.dumps([suite.classnames, suite.templates], sort_keys=True, default=list).encode()).hexdigest()[:12]
    cache_file = cache_dir / weights_sha / f"{suite.name}-{suite_key}.safetensors"
    key = (weights_sha, suite.name)
    cache = {key: load_file(str(cache_file))["classes"]} if cache_file.exists() else {}
    data = suite_data(suite)
    t0 = time.perf_counter()
    with torch.inference_mode():
        metrics, artifacts = run_suite(model, tok, suite, data, pre.image_size, cache, model_key=weights_sha, workers=workers,
                                       batch_size=batch_size)
    rate = len(data.images) / max(time.perf_counter() - t0, 1e-9)
    if key in cache and not cache_file.exists():
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"classes": cache[key].contiguous()}, str(cache_file))
    return metrics, artifacts, rate


def _open_run(s: EvaluateSpec, folder: Path, uri: str, suites: tuple[SuiteConfig, ...]) -> str:
    """The spec's run, or a new run nested under the run that trained the checkpoint."""
    from training import tracking

    if s.run_id:
        return s.run_id
    source = RunDir.of_model(folder)
    tags = {"openwit.checkpoint": s.checkpoint, "openwit.kind": "evaluate"}
    if source:
        tags.update({"mlflow.parentRunId": source.mlflow_run_id, "openwit.source_run_id": source.mlflow_run_id})
    params = {"checkpoint": s.checkpoint, "suites": [x.name for x in suites]}
    return tracking.start_run(uri, s.mlflow.experiment, f"eval-{s.name}", params, tags, artifact_root=state_dir() / "mlartifacts")


@flow(name="evaluate", log_prints=True)
def evaluate(spec: str | dict[str, Any] = "data_specs/evaluate-sample.yaml") -> dict:
    """Evaluate a checkpoint or a registered MLflow model on the spec's suites."""
    from training import tracking
    from training.eval.report import clip_benchmark_results, log_eval_artifacts

    s: EvaluateSpec = load_spec(spec, EvaluateSpec)
    logger = get_run_logger()
    device = choose_device(s.device)
    workers = max(0, (os.cpu_count() or 1) - 1) if s.workers == "auto" else s.workers
    uri = tracking.tracking_uri(s.mlflow.tracking_uri, state_dir())
    suites = suite_configs(s.suites)
    folder = checkpoint_folder(s.checkpoint, uri)
    weights_sha = sha256_file(folder / "model.safetensors")[:16]
    from training.checkpoint import ModelMeta

    step = int(ModelMeta.read(folder).extra.get("step", 0))
    run_id = _open_run(s, folder, uri, suites)
    results_dir = resolve_path(s.results_dir) if s.results_dir else folder.parent / "eval-results"
    all_metrics, rates, written = {}, {}, []
    for suite in suites:
        metrics, artifacts, rate = evaluate_suite(folder, weights_sha, suite, state_dir() / "cache" / "class-embeddings", device,
                                                  workers, s.batch_size)
        tracking.log_final(uri, run_id, {**metrics, "step": step})
        log_eval_artifacts(tracking.client(uri), run_id, suite.name, artifacts)
        written += clip_benchmark_results(metrics, suite, model=s.name, pretrained=s.checkpoint, out_dir=results_dir)
        all_metrics.update(metrics)
        rates[suite.name] = rate
        logger.info(f"{suite.name}: " + ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in metrics.items())
                    + f" ({rate:.0f} images/s on {device})")
    if s.run_id is None:
        tracking.end_run(uri, run_id, "FINISHED")
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(all_metrics.items()))
    create_markdown_artifact(key=f"evaluate-{s.name}".lower(), markdown=f"## evaluate {s.name}\n\ncheckpoint `{s.checkpoint}` (step {step}), "
                             f"MLflow run `{run_id}` at {uri}; clip_benchmark results in `{results_dir}`\n\n"
                             f"| metric | value |\n|---|---|\n{table}\n", description="evaluation metrics")
    return {"run_id": run_id, "metrics": all_metrics, "images_per_s": rates, "tracking_uri": uri, "device": device,
            "results": [str(p) for p in written]}
