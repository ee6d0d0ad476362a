"""MLflow tracking: the only module that imports mlflow.

The flow opens one run per training run (`start_run`), logs the flattened spec, the model
config and the dataset (manifest hash) as params and as a logged input; rank 0 of the trainer
logs metrics, evaluations and the final model into that run (`WorkerTracker`). Metric names are
stable across specs (`train/loss`, `zeroshot/<suite>/top1`, ...), so runs compare cleanly.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from training.checkpoint import is_checkpoint, save_model
from training.config import StageConfig, SuiteConfig, TrackingConfig


def client(uri: str) -> MlflowClient:
    return MlflowClient(uri)


def tracking_uri(configured: str | None, state_dir: Path) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir / 'mlflow.db'}"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


def start_run(uri: str, experiment: str, run_name: str, params: dict, tags: dict, manifest: dict | None = None,
              artifact_root: Path | None = None, resume_run_id: str | None = None) -> str:
    """Create (or reopen) the run and leave it RUNNING; returns its id. `end_run` closes it with
    the true status (FINISHED, FAILED, KILLED), so a crashed run never reads as finished."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment, artifact_root if uri.startswith("sqlite") else None)
    if resume_run_id:
        client.update_run(resume_run_id, status="RUNNING")
        return resume_run_id
    run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    flat = flatten(params)
    items = list(flat.items())
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in items[i:i + 100]])
    if manifest is not None:
        import pandas as pd

        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            shards = pd.DataFrame(manifest["shards"])
            ds = mlflow.data.from_pandas(shards, source=manifest.get("source", manifest["name"]), name=manifest["name"],
                                         digest=manifest["spec_hash"])
            mlflow.log_input(ds, context="training")
        client.update_run(run_id, status="RUNNING")  # leaving the `with` marked it FINISHED
    return run_id


def experiment_id(client: MlflowClient, name: str, artifact_root: Path | None = None) -> str:
    """The experiment's id, created if needed, tagged as model training so that MLflow 3's UI
    opens it on the runs table (not on its GenAI traces page)."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifact_root.as_uri() if artifact_root else None)
    if not exp or exp.tags.get(EXPERIMENT_KIND_TAG) != "custom_model_development":
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    return exp_id


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def run_url(uri: str, run_id: str) -> str:
    """A link to the run in the MLflow UI (or its id and store when the store is a file)."""
    exp_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    return run_link(uri, exp_id, run_id) if uri.startswith("http") else f"run {run_id} in {uri}"


def run_link(ui: str, exp_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, in its model-training mode."""
    return f"{ui.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}?{TRAINING_VIEW}"


# MLflow 3's UI has two modes, GenAI (its default: traces, judges, prompts) and model training; the
# mode is the `workflowType` query parameter, else what the browser last chose. Our links open the
# training mode; the experiment tag above makes the experiment page open on its runs.
TRAINING_VIEW = "workflowType=machine_learning"


def code_version(repo: Path) -> dict[str, str]:
    """MLflow's source tags for a run of this checkout: entry point, git commit, dirty flag."""
    import subprocess

    tags = {"mlflow.source.name": "flows/pretrain.py", "mlflow.source.type": "JOB"}
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        tags.update({"mlflow.source.git.commit": commit, "openwit.git_dirty": str(bool(dirty)).lower()})
    except (OSError, subprocess.CalledProcessError):
        tags["openwit.git_commit"] = "unknown (not a git checkout)"
    return tags


def log_provenance(uri: str, run_id: str, spec_yaml: str, build: Path) -> None:
    """The resolved spec and the build's manifest, data card and balance plot, beside the run."""
    import tempfile

    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "spec.yaml"
        f.write_text(spec_yaml)
        client.log_artifact(run_id, str(f))
    for name in ("manifest.json", "datacard.md", "balance/balance.png"):
        if (build / name).exists():
            client.log_artifact(run_id, str(build / name), artifact_path="build" + ("/balance" if "/" in name else ""))


def log_final(uri: str, run_id: str, metrics: dict) -> None:
    """Numeric metrics into a run (a staged run's parent gets its last stage's final metrics)."""
    client = MlflowClient(uri)
    ts = int(time.time() * 1000)
    step = int(metrics.get("step", 0))
    items = [mlflow.entities.Metric(k, float(v), ts, step) for k, v in metrics.items() if k != "step" and isinstance(v, int | float)]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500])


def end_run(uri: str, run_id: str, status: str) -> None:
    """FINISHED, FAILED or KILLED."""
    MlflowClient(uri).set_terminated(run_id, status=status)


def end_status(exc: BaseException) -> str:
    """The MLflow status a run ends with when `exc` stopped it: KILLED when a person or the
    orchestrator stopped it, FAILED otherwise."""
    stopped = isinstance(exc, KeyboardInterrupt | SystemExit) or type(exc).__name__ in ("TerminationSignal", "CancelledRun")
    return "KILLED" if stopped else "FAILED"


def open_stage_run(cfg: TrackingConfig, name: str, index: int, stage: StageConfig, resume_id: str | None) -> str:
    """A staged run's stage `index`: its own MLflow run nested under the run (reopened when the
    stage resumes), with the parent's tags and the stage's settings as params."""
    client = MlflowClient(cfg.uri)
    tags = {k: v for k, v in client.get_run(cfg.run_id).data.tags.items() if not k.startswith("mlflow.")}
    tags.update({"mlflow.parentRunId": cfg.run_id, "openwit.stage": stage.name, "openwit.stage.index": str(index + 1)})
    params = {"stage": {"name": stage.name, "steps": stage.steps, "lr": stage.lr, "warmup_steps": stage.warmup_steps,
                        "lock_image": stage.lock_image}}
    return start_run(cfg.uri, cfg.experiment, f"{name}/{stage.name}", params, tags, None, cfg.artifact_root, resume_id)


def download_model(ref: str, uri: str) -> Path:
    """A registered model (`models:/<name>/<version>`) -> the local openwit checkpoint folder inside it."""
    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
    found = sorted(p.parent for p in local.rglob("model.safetensors") if is_checkpoint(p.parent))
    if not found:
        raise FileNotFoundError(f"{ref}: the registered model holds no openwit checkpoint")
    return found[0]


class WorkerTracker:
    """Rank 0's logger inside a Ray worker: metrics, evaluations, final model."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        mlflow.set_tracking_uri(cfg.uri)
        self.client = MlflowClient(cfg.uri)
        self.run_id = cfg.run_id
        self._sysmon = None
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._sysmon = SystemMetricsMonitor(self.run_id, sampling_interval=5, samples_before_logging=1)
            self._sysmon.start()
        except Exception:  # noqa: BLE001 - system metrics are a nicety
            self._sysmon = None

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def log_metrics(self, metrics: dict, step: int) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def evaluate(self, model, tok, suites: tuple[SuiteConfig, ...], image_size: int, step: int, final: bool = False) -> dict:
        from training.eval.datasets import suite_data
        from training.eval.report import log_eval_artifacts
        from training.eval.suite import run_suite

        all_metrics = {}
        for suite in suites:
            metrics, artifacts = run_suite(model, tok, suite, suite_data(suite), image_size)  # class embeddings change as it trains
            self.log_metrics(metrics, step)
            all_metrics.update(metrics)
            if final:
                log_eval_artifacts(self.client, self.run_id, suite.name, artifacts)
        print(f"eval at step {step}: " + ", ".join(f"{k}={v:.3f}" for k, v in all_metrics.items()), flush=True)
        return all_metrics

    def finish(self, model, tok, model_dir: Path, step: int, skipped: dict) -> None:
        folder = save_model(model, model_dir, tok, extra={"step": step})
        self.client.log_metric(self.run_id, "train/skipped_records", float(sum(skipped.values())), step=step)
        log_model(self.cfg, folder)
        if self._sysmon:
            mon, self._sysmon = self._sysmon, None
            mon.finish()
            try:  # a sample at the end, so a run shorter than the sampling interval has system metrics too
                mon.collect_metrics()
                mon.publish_metrics(mon.aggregate_metrics())
                mon.mlflow_logger.flush()
            except Exception:  # system metrics are a nicety
                import logging

                logging.getLogger(__name__).debug("no final system-metrics sample", exc_info=True)


def log_model(cfg: TrackingConfig, folder: Path) -> None:
    """Log our checkpoint folder as an MLflow pyfunc model (models-from-code: nothing pickled)."""
    code = Path(__file__).with_name("mlflow_model.py")
    with mlflow.start_run(run_id=cfg.run_id):
        mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts={"checkpoint": str(folder)},
                                code_paths=[str(Path(__file__).parent)],
                                registered_model_name=cfg.register_model, pip_requirements=["torch", "safetensors", "tokenizers", "ftfy"])
        mlflow.log_artifacts(str(folder), artifact_path="checkpoint")


def final_metrics(uri: str, run_id: str) -> dict[str, float]:
    """A training run's evaluation metrics at their last logged step (the final evaluation)."""
    run = MlflowClient(uri).get_run(run_id)
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("zeroshot/", "retrieval/", "linprobe/", "linprobe_heldout/"))}
