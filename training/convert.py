"""open_clip / OpenAI CLIP interoperability: state dicts, model folders, and open_clip itself.

Our layout differs from open_clip's in two places: the text tower lives under `text.` (open_clip's
CLIP keeps it at the top level), and attention uses `in_proj.weight/bias` Linear names
(open_clip: `in_proj_weight/bias` of nn.MultiheadAttention). OpenAI's checkpoints use open_clip's
names plus three metadata entries. Everything else (ViT, ModifiedResNet, attention pooling,
projections, logit scale) has the same names and shapes.

    to_open_clip(state) / from_open_clip(state)     rename a state dict (exact round trip)
    export_open_clip(checkpoint, out)               a folder open_clip loads as `local-dir:out`
    import_weights(weights, model, out, bpe=...)    open_clip / OpenAI weights -> our checkpoint
    to_open_clip_model(model)                       an open_clip.CLIP holding our weights

Chinese-CLIP (`cn_clip`): its checkpoints keep OpenAI's image tower under `visual.` and a
Hugging Face-named BERT under `bert.` with `text_projection` at the top level; ours keep the BERT
under `text.bert.` and the projection under `text.`.

    from_cn_clip(state) / to_cn_clip(state)         rename a Chinese-CLIP state dict (exact round trip)
    import_weights(weights, "CN-CLIP-ViT-B-16", out) Chinese-CLIP weights -> our checkpoint (BERT-Chinese tokenizer)
    load_hf_bert(model, folder)                     a local Hugging Face BERT checkpoint -> our text tower

Exported folders hold `open_clip_config.json`, `open_clip_model.safetensors` and our
`tokenizer.json`. If the model was trained with CLIP's BPE (imported or fine-tuned weights),
`open_clip.get_tokenizer("local-dir:out")` tokenizes identically to ours (a test checks this);
a model trained on a build's own BPE needs `training.tokenizer.Tokenizer.load(out/"tokenizer.json")`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.model import CLIP, CLIPConfig, preset_dict

_TEXT_TOP = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")


def to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        nk = k.removeprefix("text.") if k.startswith("text.") else k
        nk = nk.replace(".attn.in_proj.weight", ".attn.in_proj_weight").replace(".attn.in_proj.bias", ".attn.in_proj_bias")
        out[nk] = v
    return out


def from_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if k in _OPENAI_METADATA or k.endswith("attn_mask"):
            continue  # buffers / metadata in OpenAI's files
        nk = k.removeprefix("module.")  # saved from DistributedDataParallel
        nk = nk.replace(".attn.in_proj_weight", ".attn.in_proj.weight").replace(".attn.in_proj_bias", ".attn.in_proj.bias")
        if nk.startswith(_TEXT_TOP):
            nk = "text." + nk
        out[nk] = v
    return out


def from_cn_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Chinese-CLIP state dict (a `state_dict` of its checkpoints, DDP prefix allowed) -> ours,
    in float32 (its released weights are fp16)."""
    out = {}
    for k, v in state.items():
        nk = k.removeprefix("module.")
        if nk.startswith("bert.pooler.") or nk in _OPENAI_METADATA or nk.endswith("attn_mask"):
            continue  # Chinese-CLIP has no pooler and drops it from checkpoints itself
        if nk.startswith("bert."):
            nk = "text." + nk
        elif nk == "text_projection":
            nk = "text.text_projection"
        else:
            nk = nk.replace(".attn.in_proj_weight", ".attn.in_proj.weight").replace(".attn.in_proj_bias", ".attn.in_proj.bias")
        out[nk] = v.float() if v.is_floating_point() else v
    return out


def to_cn_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        nk = k.removeprefix("text.") if k.startswith(("text.bert.", "text.text_projection")) else k
        out[nk.replace(".attn.in_proj.weight", ".attn.in_proj_weight").replace(".attn.in_proj.bias", ".attn.in_proj_bias")] = v
    return out


def load_hf_bert(model: CLIP, folder: str | Path) -> list[str]:
    """Initialise a BERT text tower from a local Hugging Face BERT checkpoint folder (its
    `model.safetensors`, e.g. hfl/chinese-roberta-wwm-ext or RBT3 saved with save_pretrained):
    `bert.`-prefixed or bare names, pooler and pre-training heads ignored. Returns the names
    loaded; shapes must match the preset (vocabulary 21,128, width, layers)."""
    if model.cfg.text.kind != "bert":
        raise ValueError("load_hf_bert: the model's text tower is not a BERT (text_cfg.kind: bert)")
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else [folder]
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors file (save the Hugging Face model with safe_serialization=True)")
    src: dict[str, torch.Tensor] = {}
    for f in files:
        src.update(load_file(str(f)))
    target = model.text.bert.state_dict()
    state = {}
    for k, v in src.items():
        nk = k.removeprefix("bert.")
        if nk in target:
            if target[nk].shape != v.shape:
                raise ValueError(f"{folder}: {k} has shape {tuple(v.shape)}, the model's {nk} {tuple(target[nk].shape)}: "
                                 "is the preset's text tower the same size as this BERT?")
            state[nk] = v.float()
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(f"{folder}: no weights for {missing[:4]} ({len(missing)} of {len(target)}): not a BERT checkpoint?")
    model.text.bert.load_state_dict(state)
    return sorted(state)


def open_clip_config(cfg: CLIPConfig) -> dict:
    """Our config as open_clip's `model_cfg` (the JSON in open_clip/model_configs)."""
    v, t = cfg.vision, cfg.text
    vision = {"image_size": v.image_size, "layers": list(v.layers) if isinstance(v.layers, tuple) else v.layers,
              "width": v.width, "head_width": v.head_width, "mlp_ratio": v.mlp_ratio}
    if not isinstance(v.layers, tuple):
        vision["patch_size"] = v.patch_size
        if v.patch_dropout:
            vision["patch_dropout"] = v.patch_dropout
    text = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width, "heads": t.heads, "layers": t.layers}
    if t.eot_id is not None and t.eot_id != t.vocab_size - 1:
        # CLIP's [EOS] has the highest id, so open_clip pools at argmax; our build tokenizers may not
        text.update(pool_type="eos", eos_id=t.eot_id)
    out = {"embed_dim": cfg.embed_dim, "vision_cfg": vision, "text_cfg": text}
    if cfg.quick_gelu:
        out["quick_gelu"] = True
    return out


def _torchvision_without_ops() -> None:
    """Make `import torchvision.<submodule>` work beside the CPU torch wheel.

    PyPI's torchvision wheels link against CUDA builds of torch; beside the CPU wheel the package
    `__init__` fails (`operator torchvision::nms does not exist`), although the pure-Python modules
    open_clip and cn_clip use (transforms, FrozenBatchNorm2d) work. This registers the package
    without running its `__init__`, so its submodules import."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip", "timm", "cn_clip")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("torchvision")
    pkg = types.ModuleType("torchvision")
    pkg.__path__, pkg.__spec__, pkg.__file__ = list(spec.submodule_search_locations), spec, spec.origin
    sys.modules["torchvision"] = pkg


def import_open_clip():
    """Import open_clip, also where torchvision's compiled ops cannot load (see above). Where
    torchvision imports normally this is a plain `import open_clip`."""
    try:
        import open_clip

        return open_clip
    except (RuntimeError, OSError):
        pass
    _torchvision_without_ops()
    import open_clip

    return open_clip


def import_cn_clip():
    """Import `cn_clip.clip` (Chinese-CLIP's model code and tokenizer; installed with --no-deps)
    the same way: its package imports torchvision's transforms."""
    try:
        import cn_clip.clip

        return cn_clip.clip
    except (RuntimeError, OSError):
        pass
    _torchvision_without_ops()
    import cn_clip.clip

    return cn_clip.clip


def to_open_clip_model(model: CLIP):
    """An `open_clip.CLIP` holding this model's weights (loaded strictly), in eval mode."""
    open_clip = import_open_clip()
    state = to_open_clip(model.state_dict())
    extra = {"init_logit_bias": float(state["logit_bias"])} if "logit_bias" in state else {}
    oc = open_clip.CLIP(**open_clip_config(model.cfg), **extra)
    oc.load_state_dict(state, strict=True)
    return oc.eval()


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file, never unpickling code.

    Accepts open_clip's `open_clip_pytorch_model.bin` / `*.safetensors`, training checkpoints
    with a `state_dict` entry, and state dicts saved from DistributedDataParallel.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any("/code/" in n for n in z.namelist()):  # TorchScript archives carry code/__torch__/...
                raise ValueError(f"{path} is a TorchScript archive (OpenAI's original .pt files are). Loading it would run its "
                                 "code; convert it once where you trust it: `m = open_clip.create_model(NAME, pretrained=PATH)`, "
                                 "`safetensors.torch.save_file(m.state_dict(), 'weights.safetensors')`, then import that file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a safetensors file or a plain torch state dict ({type(e).__name__}: {str(e)[:200]})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return obj


def import_weights(weights: str | Path, model: str | Path, out: str | Path, bpe: str | Path | None = None) -> Path:
    """open_clip / OpenAI CLIP weights -> our checkpoint folder (weights, config, CLIP's tokenizer).

    `model` is a preset name as in open_clip (`ViT-B-32`, `RN50`, `ViT-B-32-quickgelu` for OpenAI's
    weights) or a JSON config. `bpe` is CLIP's `bpe_simple_vocab_16e6.txt.gz`; by default the copy
    inside an installed open_clip_torch. The result trains (`init_from` in a pretrain spec),
    evaluates (`openwit evaluate`) and loads with `training.checkpoint.load_model`.
    """
    from training.checkpoint import load_weights, save_model
    from training.tokenizer import bert_chinese, from_clip_bpe

    cfg = CLIPConfig.from_dict(preset_dict(model))
    if cfg.text.kind == "bert":  # Chinese-CLIP: its layout, the BERT-Chinese vocabulary (bpe: a vocab.txt)
        tok = bert_chinese(bpe, context_length=cfg.text.context_length)
        if tok.vocab_size != cfg.text.vocab_size:
            raise ValueError(f"the vocabulary gives {tok.vocab_size} tokens but model {model} has a {cfg.text.vocab_size}-token embedding")
        net = CLIP(cfg)
        load_weights(net, from_cn_clip(load_weights_file(weights)), f"{weights} (is {model} the right preset?)")
        return save_model(net, out, tok, extra={"imported_from": str(weights), "cn_clip_model": str(model)})
    state = from_open_clip(load_weights_file(weights))
    if bpe is None:
        bpe = _open_clip_bpe()
    tok = from_clip_bpe(bpe, context_length=cfg.text.context_length)
    if tok.vocab_size != cfg.text.vocab_size:
        raise ValueError(f"{bpe} gives {tok.vocab_size} tokens but model {model} has a {cfg.text.vocab_size}-token embedding")
    cfg.text.eot_id = tok.eot_id
    net = CLIP(cfg)
    load_weights(net, state, f"{weights} (is {model} the right preset?)")
    return save_model(net, out, tok, extra={"imported_from": str(weights), "open_clip_model": str(model)})


def export_open_clip(checkpoint: str | Path, out: str | Path) -> Path:
    """Our checkpoint folder -> a folder `open_clip.create_model_and_transforms("local-dir:OUT")` loads."""
    from training.checkpoint import load_model

    model, tok, pre = load_model(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in to_open_clip(model.state_dict()).items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    config = {"model_cfg": open_clip_config(model.cfg),
              "preprocess_cfg": {"size": pre.image_size, "mean": list(pre.mean), "std": list(pre.std),
                                 "interpolation": "bicubic", "resize_mode": "shortest"}}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    if tok is not None:
        tok.save(out / "tokenizer.json")
    return out


def _open_clip_bpe() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("give the path of CLIP's bpe_simple_vocab_16e6.txt.gz (or install open_clip_torch, which ships it)")
    return Path(spec.origin).with_name("bpe_simple_vocab_16e6.txt.gz")
