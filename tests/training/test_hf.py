"""transformers in and out (training/hf.py), read against transformers' own model code: the exported
folder loads as CLIPModel / ChineseCLIPModel with features equal to ours, its processor prepares
images as our evaluation transform does, and importing it back gives every tensor exactly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import train_bpe
from training.checkpoint import load_model, save_model
from training.data.images import eval_tensor
from training.hf import export_hf, import_hf, import_transformers
from training.model import CLIP, CLIPConfig, preset_dict

transformers = import_transformers()
CAPTIONS = ["a red circle", "a green star on a blue square", "two   Red circles\tand a STAR"]


def _checkpoint(tmp_path, preset: str, tok):
    cfg = CLIPConfig.from_dict(preset_dict(preset))
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    torch.manual_seed(0)
    return save_model(CLIP(cfg).eval(), tmp_path / "ours", tok)


def _features(out):
    return out if torch.is_tensor(out) else out.pooler_output


def test_a_vit_checkpoint_exports_to_clipmodel_with_our_features_processor_and_round_trip(tmp_path):
    tok = train_bpe(["a red circle on a blue square", "a green star", "two red circles and a star"] * 30, vocab_size=300)
    tok.context_length = 32
    ck = _checkpoint(tmp_path, "debug-vit", tok)
    out = export_hf(ck, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
                                              "vocab.json", "merges.txt"}
    ours, _, pre = load_model(ck)
    theirs = transformers.CLIPModel.from_pretrained(out).eval()
    proc = transformers.CLIPProcessor.from_pretrained(out)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((48, 48), (40, 60), (70, 33))]
    assert type(proc.image_processor).__name__ == "CLIPImageProcessorPil"  # named in the folder: the same on every machine
    pixels = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
    for img, px in zip(images, pixels):  # the processor is our evaluation transform
        assert np.abs(px.numpy() - eval_tensor(img, pre.image_size)).max() < 1e-5
    enc = proc.tokenizer(CAPTIONS, padding="max_length", max_length=32, return_tensors="pt")
    ids = tok(CAPTIONS)
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(pixels), _features(theirs.get_image_features(pixel_values=pixels)), atol=1e-4)
        hf_text = _features(theirs.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
        assert torch.allclose(ours.encode_text(ids), hf_text, atol=1e-4)
    # the build BPE's <end_of_text> is id 2, which transformers would pool at argmax(ids): swapped and recorded
    assert tok.eot_id == 2 and json.loads((out / "config.json").read_text())["text_config"]["eos_token_id"] == tok.vocab_size - 1
    back = import_hf(out, tmp_path / "back")
    a, b = load_file(str(ck / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _, tok_back, _ = load_model(back)  # the same vocabulary and ids (the export's normalizers repeat our cleaning)
    assert tok_back.eot_id == tok.eot_id and tok_back.hf.get_vocab() == tok.hf.get_vocab()
    assert torch.equal(tok_back(CAPTIONS), ids)


def test_a_vit_bert_checkpoint_exports_to_chineseclipmodel(tmp_path):
    from training.tokenizer import bert_chinese

    tok = bert_chinese()
    cfg = CLIPConfig.from_dict(preset_dict("debug-rn-bert"))
    cfg.vision = CLIPConfig.from_dict(preset_dict("debug-vit")).vision  # a ViT image tower: what ChineseCLIPModel holds
    torch.manual_seed(0)
    ck = save_model(CLIP(cfg).eval(), tmp_path / "ours", tok)
    out = export_hf(ck, tmp_path / "hf")
    assert (out / "vocab.txt").read_text().splitlines()[:1] == ["[PAD]"] and len((out / "vocab.txt").read_text().splitlines()) == 21128
    ours, _, pre = load_model(ck)
    theirs = transformers.ChineseCLIPModel.from_pretrained(out).eval()
    proc = transformers.ChineseCLIPProcessor.from_pretrained(out)
    texts = ["红色国旗在广场上飘扬", "一只猫和NBA球员", "紅色國旗"]
    enc = proc.tokenizer(texts, padding="max_length", max_length=52, return_tensors="pt")
    ids = tok(texts)
    assert torch.equal(enc["input_ids"], ids)  # the same BERT-Chinese ids
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((32, 32), (45, 70), (90, 41))]
    img = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
    for im, px in zip(images, img):
        assert np.abs(px.numpy() - eval_tensor(im, pre.image_size)).max() < 1e-5
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(img), _features(theirs.get_image_features(pixel_values=img)), atol=1e-4)
        hf_text = _features(theirs.get_text_features(input_ids=ids, attention_mask=enc["attention_mask"]))
        assert torch.allclose(ours.encode_text(ids), hf_text, atol=1e-4)
    back = import_hf(out, tmp_path / "back")
    a, b = load_file(str(ck / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_what_transformers_cannot_hold_is_refused_in_one_line(tmp_path):
    tok = train_bpe(["a red circle", "a blue square"] * 20, vocab_size=300)
    ck = _checkpoint(tmp_path, "debug-rn", tok)
    with pytest.raises(ValueError, match="ModifiedResNet; transformers' CLIPModel and ChineseCLIPModel have ViT image towers only"):
        export_hf(ck, tmp_path / "hf")
    vit = _checkpoint(tmp_path / "siglip", "debug-vit", tok)
    model, _, _ = load_model(vit)
    model.add_logit_bias(-10.0)
    siglip = save_model(model, tmp_path / "siglip-ck", tok)
    with pytest.raises(ValueError, match="trained with the SigLIP loss .* transformers' CLIPModel has no bias"):
        export_hf(siglip, tmp_path / "hf2")
