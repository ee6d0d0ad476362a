"""Model files: safetensors weights + JSON (model config, tokenizer). Loading never unpickles.

    ckpt/model.safetensors   weights
    ckpt/config.json         {"model": CLIPConfig (open_clip's shape), "tokenizer": tokenizer.json text,
                              "context_length", "preprocess": {image_size, mean, std}, "extra": {...}}

Training-state checkpoints (optimizer, scheduler, data position, RNG) are torch files loaded
with `weights_only=True` (training/train_loop.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.data.decode import CLIP_MEAN, CLIP_STD
from training.dataclass_json import from_json, to_json
from training.model import CLIP, CLIPConfig
from training.run_dir import atomic, write_text
from training.tokenizer import Tokenizer


@dataclass(frozen=True)
class Preprocess:
    """What the image tower expects: CLIP's evaluation transform at `image_size`."""

    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


@dataclass(frozen=True)
class ModelMeta:
    """A checkpoint folder's config.json."""

    model: CLIPConfig
    preprocess: Preprocess
    tokenizer: str | None = None  # tokenizer.json text
    context_length: int = 77  # the tokenizer pads to what the model was built for
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path) -> ModelMeta:
        return from_json(cls, json.loads((Path(folder) / "config.json").read_text()))

    def load_tokenizer(self) -> Tokenizer | None:
        return Tokenizer.from_json(self.tokenizer, self.context_length) if self.tokenizer else None


def save_model(model: CLIP, folder: str | Path, tokenizer: Tokenizer | None = None, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = ModelMeta(model.cfg, Preprocess(model.cfg.vision.image_size), tokenizer.to_json() if tokenizer else None,
                     model.cfg.text.context_length, extra or {})
    write_text(folder / "config.json", json.dumps(to_json(meta)))
    return folder


def load_weights(model: CLIP, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor of `state` into `model`, or a ValueError naming `source` and the first
    mismatches. A model that added a SigLIP bias may start without one in `state` (it keeps its own)."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{source} does not fit the model: {str(e).splitlines()[1].strip()}") from e
    missing = [k for k in missing if k != "logit_bias"]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_model(folder: str | Path, device: str | torch.device = "cpu", strict: bool = True) -> tuple[CLIP, Tokenizer | None, Preprocess]:
    """(model in eval mode on `device`, tokenizer, preprocess) in one call. Refuses unknown keys."""
    folder = Path(folder)
    meta = ModelMeta.read(folder)
    model = CLIP(meta.model)
    state = load_file(str(folder / "model.safetensors"), device="cpu")
    if strict:
        load_weights(model, state, str(folder))
    else:
        model.load_state_dict(state, strict=False)
    return model.to(device).eval(), meta.load_tokenizer(), meta.preprocess


def is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()
