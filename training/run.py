"""Preparing a training run from a resolved spec: the typed config the Ray workers receive.

The pretrain flow calls `prepare_run` (open or reopen the MLflow run, resolve the model, the
build, the tokenizer and the suites, with absolute paths because Ray Train V2 workers change
directory) and then `training.train_loop.run_training`. Nothing here imports Prefect: the flow
passes what it knows about itself (`FlowRunInfo`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.specs import REPO_ROOT, PretrainSpec, resolve_path, state_dir
from tasks.suites import resolve_suites
from training import tracking
from training.checkpoint import checkpoint_folder


@dataclass
class FlowRunInfo:
    """The orchestrator's view of this run (empty outside Prefect)."""

    id: str = ""
    name: str = ""
    ui_url: str | None = None  # the Prefect UI, e.g. http://127.0.0.1:4200


def prefect_ui_url() -> str | None:
    """The Prefect UI the current process reports to (None for an ephemeral in-process server)."""
    api = os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL")
    return api.removesuffix("/").removesuffix("/api") if api and api.startswith("http") else None


def model_config(spec: PretrainSpec) -> dict:
    """The spec's model as a config dict, with the spec's training-time options applied."""
    from training.model import preset_dict

    mcfg = preset_dict(resolve_path(spec.model) if spec.model.endswith(".json") else spec.model)
    return with_patch_dropout(mcfg, spec.train.patch_dropout, spec.model)


def with_patch_dropout(mcfg: dict, p: float, name: str) -> dict:
    if p:
        if not isinstance(mcfg["vision_cfg"].get("layers", 12), int):
            raise ValueError(f"train.patch_dropout: {name} has a ResNet image tower, which has no patch tokens to drop; "
                             f"set train.patch_dropout: 0 or use a ViT model")
        mcfg = {**mcfg, "vision_cfg": {**mcfg["vision_cfg"], "patch_dropout": p}}
    return mcfg


def init_checkpoint(spec: PretrainSpec, run_dir: Path, uri: str) -> dict:
    """Fine-tuning: the checkpoint's model config, weights and tokenizer (written into the run dir)."""
    folder = checkpoint_folder(spec.init_from, uri)
    meta = json.loads((folder / "config.json").read_text())
    if not meta.get("tokenizer"):
        raise ValueError(f"init_from {folder}: the checkpoint carries no tokenizer, so its text tower cannot be fed")
    size = meta["model"]["vision_cfg"]["image_size"]
    if size != spec.data.image_size:
        raise ValueError(f"init_from {folder} was trained at {size}px but data.image_size is {spec.data.image_size}: set data.image_size: {size}")
    tok = run_dir / "init_tokenizer.json"
    tok.write_text(meta["tokenizer"])
    return {"model": with_patch_dropout(meta["model"], spec.train.patch_dropout, str(folder)), "tokenizer": str(tok),
            "weights": str(folder / "model.safetensors")}


def init_towers(spec: PretrainSpec, mcfg: dict, uri: str) -> dict:
    """Where the towers of a new model start: `init_image_from`'s image tower (its vision config
    must be the model's) and `init_text_from`'s BERT (a Hugging Face folder)."""
    out: dict = {"init_image": None, "init_text_bert": None}
    if spec.init_image_from:
        from training.model import CLIPConfig

        folder = checkpoint_folder(spec.init_image_from, uri)
        theirs = json.loads((folder / "config.json").read_text())["model"]

        def tower(d: dict) -> tuple:  # what the image tower's weights depend on
            c = CLIPConfig.from_dict(d)
            return c.embed_dim, c.vision.image_size, c.vision.layers, c.vision.width, c.vision.patch_size, c.vision.head_width, c.vision.mlp_ratio

        if tower(theirs) != tower(mcfg):
            raise ValueError(f"init_image_from {folder}: its image tower ({theirs['vision_cfg']}, embed_dim {theirs['embed_dim']}) "
                             f"is not the model's ({mcfg['vision_cfg']}, embed_dim {mcfg['embed_dim']}); pick a preset with the same ones")
        out["init_image"] = str(folder / "model.safetensors")
    if spec.init_text_from:
        if mcfg["text_cfg"].get("kind") != "bert":
            raise ValueError("init_text_from starts a BERT text tower; the model's text tower is not one (text_cfg.kind: bert)")
        out["init_text_bert"] = str(resolve_path(spec.init_text_from))
    return out


def stage_config(run: dict, spec: PretrainSpec, index: int) -> dict:
    """The config of stage `index` of a staged run: its own folder, Ray run and MLflow run nested
    under the run's (reopened when the stage resumes); stage 1 starts from the run's towers, a
    later stage from the model the stage before it saved."""
    st = spec.stages[index]
    run_dir = Path(run["run_dir"]) / f"stage-{index + 1}-{st.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    uri, parent = run["mlflow"]["uri"], run["mlflow"]["run_id"]
    id_file = run_dir / "mlflow_run_id"
    resume_id = id_file.read_text().strip() if id_file.exists() else None
    from mlflow.tracking import MlflowClient

    tags = {k: v for k, v in MlflowClient(uri).get_run(parent).data.tags.items() if not k.startswith("mlflow.")}
    tags.update({"mlflow.parentRunId": parent, "openwit.stage": st.name, "openwit.stage.index": str(index + 1)})
    train = {**run["train"], "steps": st.steps, "lr": st.lr if st.lr is not None else run["train"]["lr"],
             "warmup_steps": st.warmup_steps if st.warmup_steps is not None else run["train"]["warmup_steps"]}
    params = {"stage": st.model_dump(mode="json"), "train": train, "model_config": run["model"]}
    run_id = tracking.start_run(uri, spec.mlflow.experiment, f"{spec.name}/{st.name}", params, tags, None, state_dir() / "mlartifacts", resume_id)
    id_file.write_text(run_id)
    cfg = {**run, "run_name": f"{run['run_name']}-{st.name}", "run_dir": str(run_dir), "train": train, "lock_image": st.lock_image,
           "mlflow": {**run["mlflow"], "run_id": run_id, "run_dir": str(run_dir),
                      "register_model": run["mlflow"]["register_model"] if index == len(spec.stages) - 1 else None}}
    if index > 0:  # the previous stage's model, whole
        prev = Path(run["run_dir"]) / f"stage-{index}-{spec.stages[index - 1].name}" / "model" / "model.safetensors"
        if not prev.exists():
            raise RuntimeError(f"stage {st.name} starts from {prev}, which stage {spec.stages[index - 1].name} has not written")
        cfg.update(init_weights=str(prev), init_image=None, init_text_bert=None)
    return cfg


def mark_stage_done(cfg: dict, metrics: dict) -> None:
    (Path(cfg["run_dir"]) / "stage_done.json").write_text(json.dumps(metrics, indent=1, default=float))


def prepare_run(spec: PretrainSpec, flow_run: FlowRunInfo | None = None) -> dict:
    """Everything the workers need, with absolute paths; opens (or reopens) the MLflow run."""
    flow_run = flow_run or FlowRunInfo()
    build = resolve_path(spec.data.build)
    manifest = json.loads((build / "manifest.json").read_text())
    run_dir = resolve_path(spec.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking.tracking_uri(spec.mlflow.tracking_uri, state_dir())
    id_file = run_dir / "mlflow_run_id"
    resume_id = id_file.read_text().strip() if id_file.exists() else None
    init = init_checkpoint(spec, run_dir, uri) if spec.init_from else None
    mcfg = init["model"] if init else model_config(spec)
    tokenizer = init["tokenizer"] if init else str(build / manifest.get("tokenizer", "tokenizer.json"))
    if not init and mcfg["text_cfg"].get("kind") == "bert":  # Chinese-CLIP: BERT-Chinese WordPiece, not the build's BPE
        from training.tokenizer import bert_chinese

        tokenizer = str(run_dir / "tokenizer.json")
        bert_chinese(context_length=mcfg["text_cfg"]["context_length"]).save(tokenizer)
    towers = init_towers(spec, mcfg, uri)
    tags = {"openwit.spec": spec.name, "openwit.build": manifest["name"], "openwit.build.path": str(build),
            "openwit.manifest_spec_hash": manifest["spec_hash"],
            "prefect.flow_run_id": flow_run.id, "prefect.flow_run_name": flow_run.name, **tracking.code_version(REPO_ROOT)}
    if flow_run.id and flow_run.ui_url:
        tags["prefect.flow_run_url"] = f"{flow_run.ui_url}/runs/flow-run/{flow_run.id}"
    if manifest.get("prefect_flow_run_id"):  # the build-wit run that made the shards
        tags["openwit.build.prefect_flow_run_id"] = manifest["prefect_flow_run_id"]
        if flow_run.ui_url:
            tags["openwit.build.prefect_flow_run_url"] = f"{flow_run.ui_url}/runs/flow-run/{manifest['prefect_flow_run_id']}"
    params = {"spec": spec.model_dump(mode="json"), "model_config": mcfg,
              "dataset": {"name": manifest["name"], "spec_hash": manifest["spec_hash"], "rows": manifest["totals"]["rows"]}}
    manifest["source"] = str(build / "manifest.json")
    run_id = tracking.start_run(uri, spec.mlflow.experiment, spec.name, params, tags, manifest, state_dir() / "mlartifacts", resume_id)
    if resume_id is None:
        tracking.log_provenance(uri, run_id, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), build)
    id_file.write_text(run_id)
    threads = int(spec.scaling.resources_per_worker.get("CPU", 1))
    return {
        "run_name": spec.name, "run_dir": str(run_dir), "build": str(build), "subset": spec.data.subset,
        "storage": str(resolve_path(spec.scaling.storage_path) if spec.scaling.storage_path else run_dir / "ray"),
        "image_size": spec.data.image_size,
        "tokenizer": tokenizer,
        "init_weights": init["weights"] if init else None, **towers,
        "model": mcfg, "train": spec.train.model_dump(), "use_gpu": spec.scaling.use_gpu, "threads_per_worker": threads,
        "eval_suites": resolve_suites(spec.eval_suites),
        "mlflow": {"uri": uri, "run_id": run_id, "run_dir": str(run_dir), "register_model": spec.mlflow.register_model},
    }
