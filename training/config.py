"""The trainer's input: one frozen, typed `TrainConfig`, built once by the pretrain flow.

    cfg = TrainConfig(name=..., run_dir=..., model=CLIPConfig(...), data=DataConfig(...), ...)
    training.train_loop.run_training(cfg)

Everything in it is resolved: absolute paths (Ray Train V2 workers change directory), the model
config as a `CLIPConfig`, the evaluation suites as `SuiteConfig`s. Nothing in `training/` reads
a spec or a dict of string keys: YAML specs and their schema live in `tasks/specs.py`, and
`flows/configs.py` turns a pretrain spec into this. A staged run (Chinese-CLIP: the image tower
locked, then everything unlocked) lists its stages here; `for_stage` gives the config one stage
trains with.

`training.dataclass_json` turns any of them into JSON and back, field by field through the type
hints (checkpoint metadata, model JSON files), so nothing needs hand-written parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from training.model import CLIPConfig


@dataclass(frozen=True)
class DataConfig:
    """What one training worker reads (training/data/)."""

    build: Path  # a build-wit folder (manifest.json + shards/)
    tokenizer: Path  # tokenizer.json
    subset: Literal["balanced", "unbalanced"] = "balanced"
    image_size: int = 224
    loader_workers: int = 0  # decode processes per training worker (0: decode in the loader's thread)
    prefetch_batches: int = 2
    shuffle_units: int = 8  # row groups shuffled together: the loader's memory bound
    record_samples: bool = False  # write each step's uids per rank (<run_dir>/samples/)


@dataclass(frozen=True)
class OptimConfig:
    """open_clip's defaults: AdamW, lr 5e-4, wd 0.2 without decay on gains/biases, beta2 0.98, eps 1e-6."""

    lr: float = 5e-4
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    loss: Literal["clip", "siglip"] = "clip"
    lock_image: bool = False  # LiT / Chinese-CLIP stage 1: the image tower does not train


@dataclass(frozen=True)
class ScheduleConfig:
    steps: int = 1000
    warmup_steps: int = 100
    batch_size: int = 256  # global contrastive batch (all workers, all accumulation steps)
    accum_steps: int = 1
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    grad_checkpointing: bool = False
    max_minutes: float | None = None  # wall-clock budget, checked on rank 0's host clock every log_every steps
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate at the end only


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100
    storage: Path | None = None  # Ray Train's storage_path (shared or cloud storage on a cluster)
    keep: int = 2


@dataclass(frozen=True)
class InitConfig:
    """Where the weights start: a whole checkpoint (fine-tuning), or one tower each."""

    weights: Path | None = None  # model.safetensors of a checkpoint with this model's config
    image_tower: Path | None = None  # another checkpoint's image tower (Chinese-CLIP stage 1: CLIP's)
    text_bert: Path | None = None  # a Hugging Face BERT folder


@dataclass(frozen=True)
class ScalingConfig:
    workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    resources_per_worker: tuple[tuple[str, float], ...] = (("CPU", 1.0),)
    address: str | None = None  # None: a local Ray started for the run
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_failures: int = 3


@dataclass(frozen=True)
class SourceConfig:
    """Where a suite's images are: an ImageFolder, CIFAR batches, ImageNet val, a parquet table."""

    kind: Literal["imagefolder", "cifar10", "cifar100", "imagenet", "parquet"]
    path: Path
    label_col: str = "label"
    caption_col: str = "caption"
    image_col: str = "image"
    synset_map: Path | None = None  # imagenet: LOC_synset_mapping.txt
    max_images: int | None = None


@dataclass(frozen=True)
class SuiteConfig:
    """One evaluation suite, resolved: templates are strings, class names a list or {folder: name}."""

    name: str
    source: SourceConfig
    templates: tuple[str, ...] = ("a photo of a {}.",)
    classnames: tuple[str, ...] | dict[str, str] | None = None  # None: the data's own class names
    wordnet_names: bool = False  # imagenet: each synset's first lemma instead of OpenAI's names
    tasks: tuple[Literal["zeroshot", "retrieval", "linear_probe"], ...] = ("zeroshot",)
    train_source: SourceConfig | None = None  # the linear probe's training split
    class_groups: Path | None = None  # {group: [class names]} reported alone (head, tail)
    language: str = "en"  # of the class names and templates (clip_benchmark's `language`)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str  # MLflow tracking URI
    run_id: str  # the run this training logs into (opened by the flow, or per stage)
    experiment: str = "openwit"
    register_model: str | None = None
    artifact_root: Path | None = None  # a sqlite store's artifact folder


@dataclass(frozen=True)
class StageConfig:
    """One stage of a staged run; lr and warmup default to the schedule's."""

    name: str
    steps: int
    lr: float | None = None
    warmup_steps: int | None = None
    lock_image: bool = False


@dataclass(frozen=True)
class TrainConfig:
    name: str  # the run's name: Ray Train's run folder under checkpoint.storage
    run_dir: Path  # training/run_dir.py owns its layout
    model: CLIPConfig
    data: DataConfig
    tracking: TrackingConfig
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    init: InitConfig = InitConfig()
    scaling: ScalingConfig = ScalingConfig()
    eval: tuple[SuiteConfig, ...] = ()
    stages: tuple[StageConfig, ...] = ()

    @property
    def storage(self) -> Path:
        return self.checkpoint.storage or self.run_dir / "ray"

    def for_stage(self, index: int, run_dir: Path, run_id: str, previous_model: Path | None) -> TrainConfig:
        """The config stage `index` trains with: its own folder, MLflow run, steps and learning
        rate; stage 1 starts from the run's towers, a later stage from `previous_model` (whole)."""
        st = self.stages[index]
        sched = replace(self.schedule, steps=st.steps, warmup_steps=self.schedule.warmup_steps if st.warmup_steps is None else st.warmup_steps)
        optim = replace(self.optim, lr=self.optim.lr if st.lr is None else st.lr, lock_image=st.lock_image)
        init = InitConfig(weights=previous_model) if previous_model else self.init
        last = index == len(self.stages) - 1
        tracking = replace(self.tracking, run_id=run_id, register_model=self.tracking.register_model if last else None)
        return replace(self, name=f"{self.name}-{st.name}", run_dir=run_dir, schedule=sched, optim=optim, init=init,
                       tracking=tracking, stages=())
