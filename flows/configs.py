"""Specs -> the training library's typed configs: the one place where the two floors meet.

    train_config(spec, flow_run)   a pretrain spec -> TrainConfig (and the MLflow run opened for it)
    suite_config(path)             an eval-suite spec -> SuiteConfig (the sample world generated if named)
    checkpoint_folder(ref, uri)    a checkpoint path or models:/<name>/<version> -> a local folder

Paths come out absolute (Ray Train V2 workers change directory). `training/` receives only its
own types; nothing there reads a spec.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.specs import (
    REPO_ROOT,
    PretrainSpec,
    SpecError,
    SuiteSource,
    SuiteSpec,
    WorldSpec,
    load_spec,
    resolve_path,
    state_dir,
)
from training import tracking
from training.checkpoint import ModelMeta, is_checkpoint
from training.config import (
    CheckpointConfig,
    DataConfig,
    InitConfig,
    OptimConfig,
    ScalingConfig,
    ScheduleConfig,
    SourceConfig,
    StageConfig,
    SuiteConfig,
    TrackingConfig,
    TrainConfig,
)
from training.model import CLIPConfig, preset_dict
from training.run_dir import RunDir
from training.zero_shot import TEMPLATE_SETS


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_folder(ref: str, uri: str) -> Path:
    """A local folder with config.json + model.safetensors for a path or a models:/ URI."""
    if ref.startswith("models:/"):
        return tracking.download_model(ref, uri)
    folder = resolve_path(ref)
    if not is_checkpoint(folder):
        raise FileNotFoundError(f"{folder}: not a checkpoint folder (no config.json + model.safetensors); give <run_dir>/model, "
                                "models:/<name>/<version>, or a folder from `openwit import-weights`")
    return folder


# ----------------------------------------------------------------------------- suites
def suite_config(path_or_spec: str | Path | dict | SuiteSpec) -> SuiteConfig:
    s: SuiteSpec = path_or_spec if isinstance(path_or_spec, SuiteSpec) else load_spec(path_or_spec, SuiteSpec)
    source = _source(s.source)
    classnames: tuple[str, ...] | dict[str, str] | None = tuple(s.classnames) if isinstance(s.classnames, list) else None
    templates = s.templates
    if "cn_clip_imagenet" in (s.classnames, s.templates):
        names, cn_templates = cn_clip_imagenet()
        classnames = tuple(names) if s.classnames == "cn_clip_imagenet" else classnames
        templates = cn_templates if s.templates == "cn_clip_imagenet" else templates
    if s.classnames_file:
        f = _path(s.classnames_file, s.source.world)
        try:
            loaded = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"suite {s.name}: classnames_file {f}: {e}") from None
        if not isinstance(loaded, list | dict):
            raise SpecError(f"suite {s.name}: classnames_file must hold a list of names or {{class folder: name}}")
        classnames = tuple(loaded) if isinstance(loaded, list) else dict(loaded)
    templates = tuple(TEMPLATE_SETS[templates] if isinstance(templates, str) else templates)
    return SuiteConfig(name=s.name, source=source, templates=templates, classnames=classnames,
                       wordnet_names=s.classnames == "wordnet", tasks=tuple(s.tasks),
                       train_source=_source(s.train_source) if s.train_source else None,
                       class_groups=_path(s.class_groups, s.source.world) if s.class_groups else None,
                       language=s.language or ("zh" if any(_is_cjk(t) for t in templates) else "en"))


def suite_configs(paths: list) -> tuple[SuiteConfig, ...]:
    return tuple(suite_config(p) for p in paths)


def _is_cjk(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def _path(p: str, world: WorldSpec | None) -> Path:
    """A suite path: `world:...` inside the sample world (generated if needed), else like any spec path."""
    if p.startswith("world:"):
        from tasks.world.generate import ensure_world

        return ensure_world(world or WorldSpec(), log=lambda *_: None) / p.removeprefix("world:")
    return resolve_path(p)


def _source(src: SuiteSource) -> SourceConfig:
    kind = "imagefolder" if src.kind == "world" else src.kind
    return SourceConfig(kind=kind, path=_path(src.path, src.world), label_col=src.label_col, caption_col=src.caption_col,
                        image_col=src.image_col, synset_map=resolve_path(src.synset_map) if src.synset_map else None,
                        max_images=src.max_images)


def cn_clip_imagenet() -> tuple[list[str], list[str]]:
    """Chinese-CLIP's zero-shot ImageNet class names (1,000, in Chinese) and templates, from the
    installed cn_clip package's `eval/imagenet_zeroshot_templates.py` (a data file: read, not
    imported as a package). Its templates are lambdas; they become `{}` format strings."""
    import importlib.util
    import runpy

    spec = importlib.util.find_spec("cn_clip")
    f = Path(next(iter(spec.submodule_search_locations))) / "eval" / "imagenet_zeroshot_templates.py" if spec else None
    if f is None or not f.exists():
        raise SpecError("classnames/templates `cn_clip_imagenet` come with the cn_clip package: pip install --no-deps cn_clip==1.6.0")
    data = runpy.run_path(str(f))
    return list(data["imagenet_classnames"]), [t("{}") for t in data["openai_imagenet_template"]]


# ----------------------------------------------------------------------------- pretraining
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


def model_config(spec: PretrainSpec) -> CLIPConfig:
    """The spec's model preset (or JSON file), with the spec's training-time options applied."""
    cfg = CLIPConfig.from_dict(preset_dict(resolve_path(spec.model) if spec.model.endswith(".json") else spec.model))
    return with_patch_dropout(cfg, spec.train.patch_dropout, spec.model)


def with_patch_dropout(cfg: CLIPConfig, p: float, name: str) -> CLIPConfig:
    if not p:
        return cfg
    if not isinstance(cfg.vision.layers, int):  # a spec's value, reported as one (ValueError, not TypeError)
        raise ValueError(  # noqa: TRY004
            f"train.patch_dropout: {name} has a ResNet image tower, which has no patch tokens to drop; "
            "set train.patch_dropout: 0 or use a ViT model")
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, patch_dropout=p))


def _model_and_init(spec: PretrainSpec, build: Path, run: RunDir, uri: str) -> tuple[CLIPConfig, Path, InitConfig]:
    """(model config, tokenizer file, where the weights start) for a new model or a fine-tuning run."""
    if spec.init_from:  # fine-tuning: the checkpoint's config, weights and tokenizer
        folder = checkpoint_folder(spec.init_from, uri)
        meta = ModelMeta.read(folder)
        if not meta.tokenizer:
            raise ValueError(f"init_from {folder}: the checkpoint carries no tokenizer, so its text tower cannot be fed")
        if meta.model.vision.image_size != spec.data.image_size:
            raise ValueError(f"init_from {folder} was trained at {meta.model.vision.image_size}px but data.image_size is "
                             f"{spec.data.image_size}: set data.image_size: {meta.model.vision.image_size}")
        run.tokenizer.write_text(meta.tokenizer)
        return (with_patch_dropout(meta.model, spec.train.patch_dropout, str(folder)), run.tokenizer,
                InitConfig(weights=folder / "model.safetensors"))
    model = model_config(spec)
    tokenizer = build / "tokenizer.json"
    if model.text.kind == "bert":  # Chinese-CLIP: BERT-Chinese WordPiece, not the build's BPE
        from training.tokenizer import bert_chinese

        bert_chinese(context_length=model.text.context_length).save(run.tokenizer)
        tokenizer = run.tokenizer
    init = InitConfig()
    if spec.init_image_from:
        folder = checkpoint_folder(spec.init_image_from, uri)
        theirs = ModelMeta.read(folder).model

        def tower(c: CLIPConfig) -> tuple:  # what the image tower's weights depend on
            v = c.vision
            return c.embed_dim, v.image_size, v.layers, v.width, v.patch_size, v.head_width, v.mlp_ratio

        if tower(theirs) != tower(model):
            raise ValueError(f"init_image_from {folder}: its image tower ({theirs.vision}, embed_dim {theirs.embed_dim}) is not "
                             f"the model's ({model.vision}, embed_dim {model.embed_dim}); pick a preset with the same ones")
        init = dataclasses.replace(init, image_tower=folder / "model.safetensors")
    if spec.init_text_from:
        if model.text.kind != "bert":
            raise ValueError("init_text_from starts a BERT text tower; the model's text tower is not one (text_cfg.kind: bert)")
        init = dataclasses.replace(init, text_bert=resolve_path(spec.init_text_from))
    return model, tokenizer, init


def loader_workers(spec: PretrainSpec) -> int:
    """Decode processes per training worker: the spec's number, or its CPUs minus the training process."""
    w = spec.train.loader_workers
    return max(0, int(spec.scaling.resources_per_worker.get("CPU", 1)) - 1) if w == "auto" else w


def open_mlflow_run(spec: PretrainSpec, build: Path, run: RunDir, uri: str, model: CLIPConfig, flow_run: FlowRunInfo) -> str:
    """Open (or reopen, for a rerun of the same output_dir) the run's MLflow run: params, the
    dataset input, lineage tags and the provenance artifacts."""
    manifest = json.loads((build / "manifest.json").read_text())
    tags = {"openwit.spec": spec.name, "openwit.build": manifest["name"], "openwit.build.path": str(build),
            "openwit.manifest_spec_hash": manifest["spec_hash"], "prefect.flow_run_id": flow_run.id,
            "prefect.flow_run_name": flow_run.name, **tracking.code_version(REPO_ROOT)}
    if flow_run.id and flow_run.ui_url:
        tags["prefect.flow_run_url"] = f"{flow_run.ui_url}/runs/flow-run/{flow_run.id}"
    if manifest.get("prefect_flow_run_id"):  # the build-wit run that made the shards
        tags["openwit.build.prefect_flow_run_id"] = manifest["prefect_flow_run_id"]
        if flow_run.ui_url:
            tags["openwit.build.prefect_flow_run_url"] = f"{flow_run.ui_url}/runs/flow-run/{manifest['prefect_flow_run_id']}"
    params = {"spec": spec.model_dump(mode="json"), "model_config": model.to_dict(),
              "dataset": {"name": manifest["name"], "spec_hash": manifest["spec_hash"], "rows": manifest["totals"]["rows"]}}
    manifest["source"] = str(build / "manifest.json")
    resume_id = run.mlflow_run_id
    run_id = tracking.start_run(uri, spec.mlflow.experiment, spec.name, params, tags, manifest, state_dir() / "mlartifacts", resume_id)
    if resume_id is None:
        tracking.log_provenance(uri, run_id, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), build)
    run.set_mlflow_run_id(run_id)
    return run_id


def _shard_list(manifest: dict) -> list[tuple[str, str]]:
    return sorted((s["path"], s["sha256"]) for s in manifest["shards"])


def build_fingerprint(build: Path, manifest: dict) -> str:
    """What a run trains on, as one hash: the shards' sha256 (the manifest lists them) and the
    build's tokenizer. A rebuild that writes the same shards has the same fingerprint."""
    h = hashlib.sha256()
    for path, sha in _shard_list(manifest):
        h.update(f"{path} {sha}\n".encode())
    tok = build / manifest.get("tokenizer", "tokenizer.json")
    if tok.exists():
        h.update(hashlib.sha256(tok.read_bytes()).digest())
    return h.hexdigest()[:16]


def _trained_on_other_data(run: RunDir, now: dict, manifest: dict, uri: str) -> str | None:
    """Why `run` holds a run of other data than `now` (None: same data, or nothing there yet). A
    folder from before data.json is judged by what its MLflow run logged: the build's manifest
    (its shards), else the build's spec hash."""
    before = run.data_record
    if before is not None:
        if before["fingerprint"] != now["fingerprint"]:
            return f"build {before['build_name']} with fingerprint {before['fingerprint']} (shards and tokenizer)"
        if before["subset"] != now["subset"]:
            return f"data.subset {before['subset']}"
        return None
    if run.mlflow_run_id is None:
        return None
    import tempfile

    client = tracking.client(uri)
    try:
        tags = client.get_run(run.mlflow_run_id).data.tags
    except Exception:  # noqa: BLE001 - the run is gone from this tracking store: nothing to compare with
        return None
    logged = None
    with contextlib.suppress(Exception), tempfile.TemporaryDirectory() as d:  # no manifest logged: the spec hash is what there is
        logged = json.loads(Path(client.download_artifacts(run.mlflow_run_id, "build/manifest.json", d)).read_text())
    if logged is not None:
        return None if _shard_list(logged) == _shard_list(manifest) else "other shards (its MLflow run's build/manifest.json)"
    old = tags.get("openwit.manifest_spec_hash")
    return f"a build with spec hash {old} (its MLflow run's tag)" if old and old != manifest["spec_hash"] else None


def run_dir_for(spec: PretrainSpec, build: Path, uri: str, log=None) -> RunDir:
    """The run folder of `spec`, for its build: a rerun on the same data resumes; on other data the
    spec's `on_new_build` decides (refuse, or set the old run aside and start anew)."""
    run = RunDir(resolve_path(spec.output_dir)).create()
    manifest = json.loads((build / "manifest.json").read_text())
    now = {"build": str(build), "build_name": manifest["name"], "fingerprint": build_fingerprint(build, manifest),
           "subset": spec.data.subset}
    other = _trained_on_other_data(run, now, manifest, uri)
    if other is not None:
        if spec.on_new_build == "refuse":
            raise SpecError(f"output_dir {run.path} holds a run that trained on {other}; data.build {build} now holds other "
                            f"data (fingerprint {now['fingerprint']}, subset {now['subset']}), and a run does not resume on "
                            "other data. Give a new output_dir, or set on_new_build: restart to set that run aside and "
                            "train anew")
        external = spec.scaling.storage_path
        if external and "://" in external:
            raise SpecError(f"on_new_build: restart cannot set aside Ray checkpoints in {external}/{spec.name}; give a new "
                            "output_dir and spec name")
        suffix = "superseded-" + time.strftime("%Y%m%d-%H%M%S")
        aside = run.set_aside(suffix)
        ray_dir = resolve_path(external) / spec.name if external else None
        if ray_dir is not None and ray_dir.exists():
            RunDir(ray_dir).set_aside(suffix)
        (log or print)(f"{spec.output_dir}: the run there trained on {other}; set aside as {aside} (its MLflow run stays); "
                       "training anew")
        run = RunDir(resolve_path(spec.output_dir)).create()
    if run.data_record is None:
        run.set_data_record(now)
    return run


def train_config(spec: PretrainSpec, flow_run: FlowRunInfo | None = None, log=None) -> TrainConfig:
    """The typed config the trainer receives, with the MLflow run opened (or reopened) for it."""
    flow_run = flow_run or FlowRunInfo()
    build = resolve_path(spec.data.build)
    if not (build / "manifest.json").exists():
        raise FileNotFoundError(f"data.build: {build} has no manifest.json; run build-wit for it first")
    uri = tracking.tracking_uri(spec.mlflow.tracking_uri, state_dir())
    run = run_dir_for(spec, build, uri, log)
    model, tokenizer, init = _model_and_init(spec, build, run, uri)
    run_id = open_mlflow_run(spec, build, run, uri, model, flow_run)
    tr, sc = spec.train, spec.scaling
    return TrainConfig(
        name=spec.name, run_dir=run.path, model=model, init=init,
        data=DataConfig(build=build, tokenizer=tokenizer, subset=spec.data.subset, image_size=spec.data.image_size,
                        loader_workers=loader_workers(spec), prefetch_batches=tr.prefetch_batches, shuffle_units=tr.shuffle_units,
                        record_samples=tr.record_samples),
        optim=OptimConfig(lr=tr.lr, weight_decay=tr.weight_decay, beta1=tr.beta1, beta2=tr.beta2, eps=tr.eps, grad_clip=tr.grad_clip,
                          loss=tr.loss),
        schedule=ScheduleConfig(steps=tr.steps, warmup_steps=tr.warmup_steps, batch_size=tr.batch_size, accum_steps=tr.accum_steps,
                                seed=tr.seed, precision=tr.precision, compile=tr.compile, grad_checkpointing=tr.grad_checkpointing,
                                max_minutes=tr.max_minutes, log_every=tr.log_every, eval_every=tr.eval_every),
        checkpoint=CheckpointConfig(every=tr.checkpoint_every,
                                    storage=resolve_path(sc.storage_path) if sc.storage_path else run.ray_storage),
        scaling=ScalingConfig(workers=sc.workers, use_gpu=sc.use_gpu, cpus_per_worker=float(sc.resources_per_worker.get("CPU", 1)),
                              resources_per_worker=tuple(sorted(sc.resources_per_worker.items())), address=sc.address,
                              placement_strategy=sc.placement_strategy, max_failures=sc.max_failures),
        eval=suite_configs(spec.eval_suites),
        tracking=TrackingConfig(uri=uri, run_id=run_id, experiment=spec.mlflow.experiment, register_model=spec.mlflow.register_model,
                                artifact_root=state_dir() / "mlartifacts"),
        stages=tuple(StageConfig(st.name, st.steps, st.lr, st.warmup_steps, st.lock_image) for st in spec.stages),
    )
