"""Hugging Face transformers in and out: `CLIPModel` and `ChineseCLIPModel` folders.

    export_hf(checkpoint, out)   our checkpoint -> a folder CLIPModel / ChineseCLIPModel.from_pretrained loads,
                                 with CLIPProcessor / ChineseCLIPProcessor files (tokenizer, image processor)
    import_hf(folder, out)       such a folder (ours, or one from the Hub saved locally) -> our checkpoint

The mapping is transformers' own conversion scripts' (convert_clip_original_pytorch_to_hf.py,
convert_chinese_clip_original_pytorch_to_hf.py): the fused attention in-projection split into
q/k/v, `ln_1/ln_2` -> `layer_norm1/2`, `mlp.c_fc/c_proj` -> `mlp.fc1/fc2`, `ln_pre` ->
`pre_layrnorm` (transformers' spelling), `ln_post` -> `post_layernorm`, the projections
transposed into bias-free Linear layers, `logit_scale` kept in log space; a BERT text tower is
`text_model.*` as it is (we keep Hugging Face's BERT names). Nothing here imports transformers.

Two things transformers cannot express are refused in one line: a ModifiedResNet image tower
(CLIPModel has ViT towers only) and SigLIP's logit bias. One it expresses differently is mended:
CLIPModel pools the text at `argmax(input_ids)` when `eos_token_id == 2` (a legacy rule), and a
build's own BPE has `<end_of_text>` at id 2; the export swaps that id with the last one (in the
token embedding and in tokenizer.json, recorded as `openwit_token_swap`) and the import swaps back,
so a round trip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.checkpoint import Preprocess, load_model, save_model
from training.model import CLIP, CLIPConfig, TextConfig, VisionConfig
from training.run_dir import write_text
from training.tokenizer import Tokenizer

LEGACY_EOS = 2  # transformers' CLIPTextTransformer pools at argmax(input_ids) when eos_token_id == 2


# ----------------------------------------------------------------------------- state dicts
def _tower_to_hf(state: dict, ours: str, theirs: str, layers: int) -> dict:
    """One transformer tower: our `resblocks.i.*` -> transformers' `encoder.layers.i.*`."""
    out = {}
    for i in range(layers):
        a, b = f"{ours}.resblocks.{i}", f"{theirs}.encoder.layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = state[f"{a}.attn.in_proj.{kind}"].chunk(3, dim=0)
            out.update({f"{b}.self_attn.q_proj.{kind}": q, f"{b}.self_attn.k_proj.{kind}": k, f"{b}.self_attn.v_proj.{kind}": v,
                        f"{b}.self_attn.out_proj.{kind}": state[f"{a}.attn.out_proj.{kind}"],
                        f"{b}.layer_norm1.{kind}": state[f"{a}.ln_1.{kind}"], f"{b}.layer_norm2.{kind}": state[f"{a}.ln_2.{kind}"],
                        f"{b}.mlp.fc1.{kind}": state[f"{a}.mlp.c_fc.{kind}"], f"{b}.mlp.fc2.{kind}": state[f"{a}.mlp.c_proj.{kind}"]})
    return out


def _tower_from_hf(state: dict, ours: str, theirs: str, layers: int) -> dict:
    out = {}
    for i in range(layers):
        a, b = f"{ours}.resblocks.{i}", f"{theirs}.encoder.layers.{i}"
        for kind in ("weight", "bias"):
            out[f"{a}.attn.in_proj.{kind}"] = torch.cat([state[f"{b}.self_attn.{p}_proj.{kind}"] for p in "qkv"], dim=0)
            out.update({f"{a}.attn.out_proj.{kind}": state[f"{b}.self_attn.out_proj.{kind}"],
                        f"{a}.ln_1.{kind}": state[f"{b}.layer_norm1.{kind}"], f"{a}.ln_2.{kind}": state[f"{b}.layer_norm2.{kind}"],
                        f"{a}.mlp.c_fc.{kind}": state[f"{b}.mlp.fc1.{kind}"], f"{a}.mlp.c_proj.{kind}": state[f"{b}.mlp.fc2.{kind}"]})
    return out


_VISION = {"visual.class_embedding": "vision_model.embeddings.class_embedding",
           "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
           "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
           "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
           "visual.ln_post.weight": "vision_model.post_layernorm.weight", "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
_TEXT = {"text.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
         "text.positional_embedding": "text_model.embeddings.position_embedding.weight",
         "text.ln_final.weight": "text_model.final_layer_norm.weight", "text.ln_final.bias": "text_model.final_layer_norm.bias"}


def to_hf(state: dict[str, torch.Tensor], cfg: CLIPConfig) -> dict[str, torch.Tensor]:
    out = {"logit_scale": state["logit_scale"], "visual_projection.weight": state["visual.proj"].T}
    out.update({theirs: state[ours] for ours, theirs in _VISION.items()})
    out.update(_tower_to_hf(state, "visual.transformer", "vision_model", cfg.vision.layers))
    if cfg.text.kind == "bert":
        out.update({f"text_model.{k.removeprefix('text.bert.')}": v for k, v in state.items() if k.startswith("text.bert.")})
    else:
        out.update({theirs: state[ours] for ours, theirs in _TEXT.items()})
        out.update(_tower_to_hf(state, "text.transformer", "text_model", cfg.text.layers))
    out["text_projection.weight"] = state["text.text_projection"].T
    return {k: v.contiguous() for k, v in out.items()}


def from_hf(state: dict[str, torch.Tensor], cfg: CLIPConfig) -> dict[str, torch.Tensor]:
    out = {"logit_scale": state["logit_scale"], "visual.proj": state["visual_projection.weight"].T,
           "text.text_projection": state["text_projection.weight"].T}
    out.update({ours: state[theirs] for ours, theirs in _VISION.items()})
    out.update(_tower_from_hf(state, "visual.transformer", "vision_model", cfg.vision.layers))
    if cfg.text.kind == "bert":
        out.update({f"text.bert.{k.removeprefix('text_model.')}": v for k, v in state.items()
                    if k.startswith("text_model.") and not k.startswith("text_model.pooler.") and not k.endswith("position_ids")})
    else:
        out.update({ours: state[theirs] for ours, theirs in _TEXT.items()})
        out.update(_tower_from_hf(state, "text.transformer", "text_model", cfg.text.layers))
    return {k: v.contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------- configs
def hf_config(cfg: CLIPConfig, tok: Tokenizer, eos_id: int) -> dict:
    v, t = cfg.vision, cfg.text
    act = "quick_gelu" if cfg.quick_gelu else "gelu"
    vision = {"hidden_size": v.width, "intermediate_size": int(v.width * v.mlp_ratio), "num_hidden_layers": v.layers,
              "num_attention_heads": v.width // v.head_width, "image_size": v.image_size, "patch_size": v.patch_size,
              "hidden_act": act, "layer_norm_eps": 1e-5, "projection_dim": cfg.embed_dim}
    common = {"projection_dim": cfg.embed_dim, "logit_scale_init_value": 2.6592, "torch_dtype": "float32"}
    if t.kind == "bert":
        text = {"vocab_size": t.vocab_size, "hidden_size": t.width, "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.layers, "num_attention_heads": t.heads, "max_position_embeddings": t.max_position_embeddings,
                "type_vocab_size": t.type_vocab_size, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": t.pad_id,
                "hidden_dropout_prob": t.dropout, "attention_probs_dropout_prob": t.dropout}
        return {"architectures": ["ChineseCLIPModel"], "model_type": "chinese_clip", "text_config": text, "vision_config": vision,
                **common}
    text = {"vocab_size": t.vocab_size, "hidden_size": t.width, "intermediate_size": 4 * t.width, "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads, "max_position_embeddings": t.context_length, "hidden_act": act, "layer_norm_eps": 1e-5,
            "bos_token_id": tok.sot_id, "eos_token_id": eos_id, "pad_token_id": tok.pad_id, "projection_dim": cfg.embed_dim}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "text_config": text, "vision_config": vision, **common}


def config_from_hf(d: dict) -> CLIPConfig:
    v, t = d["vision_config"], d["text_config"]
    if d.get("model_type") not in ("clip", "chinese_clip"):
        raise ValueError(f"model_type {d.get('model_type')!r}: openwit imports CLIPModel and ChineseCLIPModel folders")
    vision = VisionConfig(image_size=v["image_size"], layers=v["num_hidden_layers"], width=v["hidden_size"],
                          patch_size=v["patch_size"], head_width=v["hidden_size"] // v["num_attention_heads"],
                          mlp_ratio=v["intermediate_size"] / v["hidden_size"])
    if d["model_type"] == "chinese_clip":
        text = TextConfig(kind="bert", context_length=52, vocab_size=t["vocab_size"], width=t["hidden_size"], heads=t["num_attention_heads"],
                          layers=t["num_hidden_layers"], intermediate_size=t["intermediate_size"],
                          max_position_embeddings=t["max_position_embeddings"], type_vocab_size=t["type_vocab_size"],
                          pad_id=t.get("pad_token_id", 0), dropout=t.get("hidden_dropout_prob", 0.1))
    else:
        text = TextConfig(context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"], width=t["hidden_size"],
                          heads=t["num_attention_heads"], layers=t["num_hidden_layers"], eot_id=t.get("eos_token_id"))
    quick = v.get("hidden_act") == "quick_gelu"
    return CLIPConfig(embed_dim=d["projection_dim"], vision=vision, text=text, quick_gelu=quick)


# ----------------------------------------------------------------------------- tokenizers
def _swapped_tokenizer(tok: Tokenizer, a: int, b: int) -> dict:
    """tokenizer.json with ids a and b exchanged (vocabulary, added tokens)."""
    d = json.loads(tok.to_json())
    swap = {a: b, b: a}
    d["model"]["vocab"] = {k: swap.get(i, i) for k, i in d["model"]["vocab"].items()}
    for t in d.get("added_tokens", []):
        t["id"] = swap.get(t["id"], t["id"])
    return d


def _write_bpe_tokenizer(out: Path, tok: Tokenizer, swap: tuple[int, int] | None, context: int) -> None:
    """tokenizer.json as transformers loads it (PreTrainedTokenizerFast): our BPE with CLIP's cleaning
    as normalizers (NFC, whitespace, lower case: all of training.tokenizer.clean but ftfy's repairs
    and HTML unescaping) and `<start_of_text> ... <end_of_text>` added by a post-processor;
    vocab.json and merges.txt beside it."""
    from tokenizers import Regex, normalizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    d = _swapped_tokenizer(tok, *swap) if swap else json.loads(tok.to_json())
    hf = HFTokenizer.from_str(json.dumps(d))
    names = {i: k for k, i in d["model"]["vocab"].items()}
    sot_id, eot_id = (swap[1] if swap and i == swap[0] else i for i in (tok.sot_id, tok.eot_id))
    sot, eot, pad = names[sot_id], names[eot_id], names[tok.pad_id]
    hf.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
                                          normalizers.Lowercase()])
    hf.post_processor = processors.TemplateProcessing(single=f"{sot} $A {eot}", pair=f"{sot} $A {eot} $B {eot}",
                                                      special_tokens=[(sot, sot_id), (eot, eot_id)])
    write_text(out / "tokenizer.json", hf.to_str())
    vocab = d["model"]["vocab"]
    write_text(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    merges = d["model"].get("merges", [])
    write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m) for m in merges) + "\n")
    # PreTrainedTokenizerFast reads tokenizer.json as it is; CLIPTokenizer would rebuild CLIP's own
    # pipeline from vocab.json and merges.txt, which is a build's BPE's only when it is CLIP's
    write_text(out / "tokenizer_config.json", json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": sot, "eos_token": eot, "pad_token": pad, "unk_token": eot,
        "model_max_length": context}, ensure_ascii=False))
    write_text(out / "special_tokens_map.json", json.dumps({"bos_token": sot, "eos_token": eot, "pad_token": pad, "unk_token": eot}))


def _write_bert_tokenizer(out: Path, tok: Tokenizer, context: int) -> None:
    vocab = sorted(tok.hf.get_vocab().items(), key=lambda kv: kv[1])
    write_text(out / "vocab.txt", "\n".join(k for k, _ in vocab) + "\n")
    write_text(out / "tokenizer.json", tok.to_json())
    write_text(out / "tokenizer_config.json", json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                                          "model_max_length": context, "tokenize_chinese_chars": True}))
    write_text(out / "special_tokens_map.json", json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                                            "unk_token": "[UNK]", "mask_token": "[MASK]"}))


def preprocessor_config(pre: Preprocess, chinese: bool) -> dict:
    """CLIP's evaluation transform as transformers' image processor does it: the shortest side to
    the model's size (bicubic), the centre square, rescale, CLIP's mean/std."""
    # the PIL processors, by name: transformers' torchvision-backed default resizes with torch's
    # antialiasing (up to 0.015 off PIL's bicubic here); PIL's is open_clip's and ours, on every machine
    return {"image_processor_type": "ChineseCLIPImageProcessorPil" if chinese else "CLIPImageProcessorPil",
            "processor_class": "ChineseCLIPProcessor" if chinese else "CLIPProcessor",
            "do_resize": True, "size": {"shortest_edge": pre.image_size}, "resample": 3, "do_center_crop": True,
            "crop_size": {"height": pre.image_size, "width": pre.image_size}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(pre.mean), "image_std": list(pre.std), "do_convert_rgb": True}


# ----------------------------------------------------------------------------- export / import
def hf_refusal(cfg: CLIPConfig, state: dict) -> str | None:
    """Why transformers cannot hold this model, or None."""
    if not isinstance(cfg.vision.layers, int):
        return "its image tower is a ModifiedResNet; transformers' CLIPModel and ChineseCLIPModel have ViT image towers only"
    if "logit_bias" in state:
        return "it was trained with the SigLIP loss (a logit bias); transformers' CLIPModel has no bias (use SiglipModel's layout)"
    return None


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Our checkpoint -> a transformers folder: config.json, model.safetensors, preprocessor_config.json,
    tokenizer files. CLIPModel for a CLIP text tower, ChineseCLIPModel for a BERT one."""
    model, tok, pre = load_model(checkpoint)
    cfg, state = model.cfg, {k: v.detach() for k, v in model.state_dict().items()}
    if why := hf_refusal(cfg, state):
        raise ValueError(f"{checkpoint}: cannot export to transformers: {why}")
    if tok is None:
        raise ValueError(f"{checkpoint}: the checkpoint carries no tokenizer to export")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bert = cfg.text.kind == "bert"
    swap = None
    eos = tok.eot_id
    if not bert and tok.eot_id == LEGACY_EOS:  # see the module docstring
        swap = (LEGACY_EOS, cfg.text.vocab_size - 1)
        emb = state["text.token_embedding.weight"].clone()
        emb[[swap[0], swap[1]]] = emb[[swap[1], swap[0]]]
        state = {**state, "text.token_embedding.weight": emb}
        eos = swap[1]
    theirs = hf_config(cfg, tok, eos)  # transformers' config.json (a plain dict: their schema, not ours)
    if swap:
        theirs["openwit_token_swap"] = list(swap)
    with_name = {"transformers_version": None} | theirs
    write_text(out / "config.json", json.dumps({k: v for k, v in with_name.items() if v is not None}, indent=2))
    save_file(to_hf(state, cfg), str(out / "model.safetensors"), metadata={"format": "pt"})
    write_text(out / "preprocessor_config.json", json.dumps(preprocessor_config(pre, bert), indent=2))
    if bert:
        _write_bert_tokenizer(out, tok, cfg.text.context_length)
    else:
        _write_bpe_tokenizer(out, tok, swap, cfg.text.context_length)
    return out


def import_hf(folder: str | Path, out: str | Path) -> Path:
    """A transformers CLIPModel / ChineseCLIPModel folder -> our checkpoint (its tokenizer inside)."""
    folder = Path(folder)
    d = json.loads((folder / "config.json").read_text())
    cfg = config_from_hf(d)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights (save the model with safe_serialization=True)")
    hf_state: dict[str, torch.Tensor] = {}
    for f in files:
        hf_state.update(load_file(str(f)))
    state = from_hf(hf_state, cfg)
    if cfg.text.kind == "bert":
        from training.tokenizer import bert_chinese

        tok = bert_chinese(folder / "vocab.txt", context_length=cfg.text.context_length)
    else:
        tok = Tokenizer.load(folder / "tokenizer.json", cfg.text.context_length)
        swap = d.get("openwit_token_swap")
        if swap:  # undo the export's id swap: the checkpoint as it was
            a, b = swap
            emb = state["text.token_embedding.weight"].clone()
            emb[[a, b]] = emb[[b, a]]
            state["text.token_embedding.weight"] = emb
            tok = Tokenizer.from_json(json.dumps(_swapped_tokenizer(tok, a, b)), cfg.text.context_length)
        cfg.text.eot_id = tok.eot_id
    net = CLIP(cfg)
    from training.checkpoint import load_weights

    load_weights(net, state, f"{folder} (transformers)")
    return save_model(net, out, tok, extra={"imported_from": str(folder), "transformers_model_type": d["model_type"]})


def import_transformers():
    """Import transformers, also beside the CPU torch wheel, where PyPI's torchvision (which
    transformers imports when it finds it) cannot load its compiled ops: then torchvision is
    hidden while transformers imports, so it records "no torchvision" and uses its PIL image
    processors (the ones our evaluation transform equals), and is put back afterwards for
    open_clip and cn_clip (training/convert.py loads its pure-Python parts)."""
    import sys

    try:
        import torchvision

        usable = hasattr(torchvision, "__version__")  # training/convert.py's stand-in has no version: no ops
    except Exception:  # noqa: BLE001 - RuntimeError "operator torchvision::nms does not exist", and kin
        usable = False
    if usable:
        import transformers

        return transformers
    saved = {m: sys.modules.pop(m) for m in [m for m in sys.modules if m.split(".")[0] == "torchvision"]}
    sys.modules["torchvision"] = None  # find_spec -> "not installed"
    try:
        import transformers
        from transformers.utils import import_utils

        # decided now, while torchvision is hidden (also when open_clip imported transformers earlier)
        for check in (import_utils.is_torchvision_available, import_utils.is_torchvision_v2_available):
            check.cache_clear()
            check()
    finally:
        del sys.modules["torchvision"]
        sys.modules.update(saved)
    return transformers
