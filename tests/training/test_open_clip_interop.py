"""Interoperability with the real open_clip (a dev dependency): same weights, same features.

Models trained here must run in open_clip and clip_benchmark, and published open_clip / OpenAI
weights must load here for fine-tuning and evaluation. These tests run open_clip's own model code
on the converted weights and compare features, and compare tokenization with open_clip's.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import REPO
from training.checkpoint import CLIP_MEAN, CLIP_STD, load_model
from training.convert import (
    export_open_clip,
    import_open_clip,
    import_weights,
    load_weights_file,
    to_open_clip,
    to_open_clip_model,
)
from training.model import CLIP, CLIPConfig, preset_dict
from training.tokenizer import from_clip_bpe

open_clip = import_open_clip()

TEXTS = ["a photo of a cat", "A Photo OF  a\tDOG!!", "北京的天安门广场", "🐶🐱 emoji party 🎉", "naïve café résumé",
         "it's what we've done, they'll see", "1234567 numbers 3.14", "&amp; html &lt;b&gt;", "x" * 300,
         " ".join(["word"] * 100), "Привет мир", "مرحبا بالعالم", "日本語のテキスト", "ﬁ ligature ｆｕｌｌｗｉｄｔｈ", ""]


def _inputs(cfg: CLIPConfig, eot: int):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    lo, hi = (eot + 1, cfg.text.vocab_size) if eot + 1 < cfg.text.vocab_size else (4, eot)  # ids other than [EOS]
    txt = torch.randint(lo, hi, (3, cfg.text.context_length), generator=g)
    txt[0, 5], txt[1, 9], txt[2, -1] = eot, eot, eot
    txt[0, 6:], txt[1, 10:] = 0, 0
    return img, txt


@pytest.mark.parametrize("name,eot", [("debug-vit", 3), ("debug-rn", 3), ("debug-vit-quickgelu", 1023)])
def test_our_weights_give_the_same_features_in_open_clip(name, eot):
    cfg = CLIPConfig.from_dict(preset_dict(name))
    cfg.text.eot_id = eot  # 3: a build tokenizer's [EOS]; vocab_size - 1: CLIP's (open_clip pools at argmax)
    torch.manual_seed(0)
    ours = CLIP(cfg).eval()
    theirs = to_open_clip_model(ours)
    img, txt = _inputs(cfg, eot)
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(img), theirs.encode_image(img), atol=1e-5)
        assert torch.allclose(ours.encode_text(txt), theirs.encode_text(txt), atol=1e-5)
        lpi, _ = ours.get_similarity(img, txt)
        fi, ft, scale = theirs(img, txt)[:3]  # normalized features and exp(logit_scale)
        ref = scale * fi @ ft.T
        assert torch.allclose(lpi, ref, atol=1e-4)


def test_clip_tokenizer_matches_open_clip():
    ours = from_clip_bpe(open_clip.tokenizer.default_bpe())
    assert torch.equal(ours(TEXTS), open_clip.tokenize(TEXTS))


@pytest.mark.parametrize("name", ["RN50", "ViT-B-32-quickgelu"])
def test_open_clip_weights_import_then_export_back(name, tmp_path):
    """open_clip weights (.bin state dict) -> our checkpoint -> same features; our export ->
    open_clip's `local-dir:` loader -> same features, and open_clip's tokenizer for it equals ours."""
    torch.manual_seed(0)
    ref = open_clip.create_model(name).eval()
    torch.save(ref.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    ck = import_weights(tmp_path / "open_clip_pytorch_model.bin", name, tmp_path / "ours")
    ours, tok, pre = load_model(ck)
    assert pre.image_size == 224 and tok.vocab_size == 49408 and ours.cfg.quick_gelu == name.endswith("quickgelu")
    img, txt = torch.randn(2, 3, 224, 224), tok(TEXTS[:2])
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(img), ref.encode_image(img), atol=1e-5)
        assert torch.allclose(ours.encode_text(txt), ref.encode_text(txt), atol=1e-5)
    out = export_open_clip(ck, tmp_path / "export")
    back, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    back.eval()
    assert tuple(preprocess.transforms[-1].mean) == CLIP_MEAN and tuple(preprocess.transforms[-1].std) == CLIP_STD
    with torch.no_grad():
        assert torch.equal(back.encode_image(img), ref.encode_image(img))
    assert torch.equal(open_clip.get_tokenizer(f"local-dir:{out}")(TEXTS), tok(TEXTS))
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["preprocess_cfg"]["size"] == 224 and cfg["model_cfg"].get("quick_gelu", False) == name.endswith("quickgelu")


def test_import_refuses_torchscript_and_weights_of_another_model(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ViT-B-32.pt"))
    with pytest.raises(ValueError, match="TorchScript"):
        load_weights_file(tmp_path / "ViT-B-32.pt")
    cfg = CLIPConfig.from_dict(preset_dict("debug-rn"))
    cfg.text.vocab_size = 49408
    save_file({k: v.contiguous() for k, v in to_open_clip(CLIP(cfg).state_dict()).items()}, str(tmp_path / "rn.safetensors"))
    (tmp_path / "rn.json").write_text(json.dumps(cfg.to_dict()))
    assert load_model(import_weights(tmp_path / "rn.safetensors", tmp_path / "rn.json", tmp_path / "ok"))[1].vocab_size == 49408
    with pytest.raises(ValueError, match="1024-token embedding"):
        import_weights(tmp_path / "rn.safetensors", "debug-vit", tmp_path / "bad")  # a preset whose vocabulary is not CLIP's
    (tmp_path / "vit.json").write_text(json.dumps({**json.loads((REPO / "training/model_configs/debug-vit.json").read_text()),
                                                    "text_cfg": cfg.to_dict()["text_cfg"]}))
    with pytest.raises(ValueError, match="does not fit"):
        import_weights(tmp_path / "rn.safetensors", tmp_path / "vit.json", tmp_path / "bad")
    with pytest.raises(ValueError, match="unknown model preset 'ViT-B-99'"):
        preset_dict("ViT-B-99")


def test_cli_import_and_export(tmp_path, capsys):
    from flows.cli import main

    cfg = CLIPConfig.from_dict(preset_dict("debug-vit"))
    cfg.text.vocab_size = 49408
    (tmp_path / "m.json").write_text(json.dumps(cfg.to_dict()))
    torch.save(to_open_clip(CLIP(cfg).state_dict()), tmp_path / "w.bin")
    assert main(["import-weights", str(tmp_path / "w.bin"), "--model", str(tmp_path / "m.json"), "--out", str(tmp_path / "ck")]) == 0
    assert main(["export-open-clip", str(tmp_path / "ck"), "--out", str(tmp_path / "oc")]) == 0
    assert {p.name for p in (tmp_path / "oc").iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"}
    assert main(["import-weights", str(tmp_path / "nope.bin"), "--model", "debug-vit", "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_open_clip_config_carries_patch_dropout():
    cfg = CLIPConfig.from_dict(preset_dict("debug-vit"))
    cfg.vision.patch_dropout = 0.5
    assert to_open_clip_model(CLIP(cfg)).visual.patch_dropout.prob == 0.5


@pytest.mark.parametrize("name", ["debug-vit", "debug-rn", "RN50", "ViT-B-32"])
def test_initialisation_matches_open_clip(name):
    """CLIP's init_parameters: every tensor starts with open_clip's spread (std per parameter),
    the zero-initialised ones (attention biases, each bottleneck's bn3) at zero."""
    from training.convert import open_clip_config

    cfg = CLIPConfig.from_dict(preset_dict(name))
    torch.manual_seed(0)
    ours = to_open_clip(CLIP(cfg).state_dict())
    mcfg = open_clip_config(cfg)
    theirs = open_clip.CLIP(mcfg["embed_dim"], mcfg["vision_cfg"], mcfg["text_cfg"], quick_gelu=mcfg.get("quick_gelu", False)).state_dict()
    checked = 0
    for k, t in theirs.items():
        if not t.is_floating_point() or k.endswith(("running_mean", "running_var", "attn_mask")):
            continue
        o = ours[k]
        if t.abs().max() == 0:
            assert o.abs().max() == 0, f"{k} should start at zero"
        elif t.numel() >= 256 and t.std() > 0:
            ratio = (o.std() / t.std()).item()
            assert 0.85 < ratio < 1.18, f"{k}: std {o.std():.4f} vs open_clip {t.std():.4f}"
            checked += 1
    assert checked > 10
