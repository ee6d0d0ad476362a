"""Model files: safetensors weights + JSON (model config, tokenizer). Loading never unpickles.

    ckpt/model.safetensors   weights
    ckpt/config.json         {"model": CLIPConfig dict, "tokenizer": tokenizer.json text,
                              "preprocess": {...}, "extra": {...}}

Training-state checkpoints (optimizer, scheduler, data position, RNG) are torch files loaded
with `weights_only=True` (training/train_loop.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.model import CLIP, CLIPConfig
from training.tokenizer import Tokenizer


def save_model(model: CLIP, folder: str | Path, tokenizer: Tokenizer | None = None, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.rename(folder / "model.safetensors")
    meta = {"model": model.cfg.to_dict(), "tokenizer": tokenizer.to_json() if tokenizer else None,
            "context_length": model.cfg.text.context_length,  # the tokenizer must pad to what the model was built for
            "preprocess": {"image_size": model.cfg.vision.image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
            "extra": extra or {}}
    (folder / "config.json").write_text(json.dumps(meta))
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


def load_model(folder: str | Path, device: str = "cpu", strict: bool = True) -> tuple[CLIP, Tokenizer | None, dict]:
    """(model in eval mode, tokenizer, preprocess info) in one call. Refuses unknown keys."""
    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    model = CLIP(CLIPConfig.from_dict(meta["model"]))
    state = load_file(str(folder / "model.safetensors"), device=device)
    if strict:
        load_weights(model, state, str(folder))
    else:
        model.load_state_dict(state, strict=False)
    tok = Tokenizer.from_json(meta["tokenizer"], meta.get("context_length", 77)) if meta.get("tokenizer") else None
    return model.to(device).eval(), tok, meta["preprocess"]


def checkpoint_folder(ref: str, uri: str) -> Path:
    """A local folder with config.json + model.safetensors for a path or a models:/ URI."""
    if not ref.startswith("models:/"):
        from tasks.specs import resolve_path

        folder = resolve_path(ref)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{folder}: not a checkpoint folder (no config.json); give <run_dir>/model or models:/<name>/<version>")
        return folder
    import mlflow

    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
    found = sorted(p.parent for p in local.rglob("model.safetensors") if (p.parent / "config.json").exists())
    if not found:
        raise FileNotFoundError(f"{ref}: the registered model holds no openwit checkpoint")
    return found[0]


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
