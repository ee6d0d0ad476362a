"""Chinese-CLIP interop, read against its own code: the `cn_clip` package (installed with --no-deps;
its model code and tokenizer run here, torchvision loaded without its compiled ops).

Parameter counts of the five published models, tokenizer ids, and features of cn_clip's own model
with random weights against ours after conversion."""

import json
from pathlib import Path

import pytest
import torch

from training.convert import from_cn_clip, import_cn_clip, import_weights, load_hf_bert, to_cn_clip
from training.model import CLIP, CLIPConfig, count_params, preset_dict
from training.tokenizer import bert_chinese

cn_clip = pytest.importorskip("cn_clip", reason="cn_clip is installed by `make install` (pip install --no-deps cn_clip==1.6.0)")

# Chinese-CLIP's published sizes, as its model code counts them
PUBLISHED = {"CN-CLIP-RN50": 76_989_537, "CN-CLIP-ViT-B-16": 188_262_913, "CN-CLIP-ViT-L-14": 406_233_089,
             "CN-CLIP-ViT-L-14-336": 406_560_769, "CN-CLIP-ViT-H-14": 957_598_209}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_have_chinese_clips_parameter_counts(name):
    with torch.device("meta"):
        model = CLIP(CLIPConfig.from_dict(preset_dict(name)))
    assert count_params(model) == PUBLISHED[name]


def test_rn50_count_equals_cn_clips_own_model():
    clip = import_cn_clip()
    from cn_clip.clip.model import CLIP as CnCLIP

    configs = Path(clip.__path__[0]) / "model_configs"
    info = {**json.loads((configs / "RN50.json").read_text()), **json.loads((configs / "RBT3-chinese.json").read_text())}
    info["vision_layers"] = json.loads(info["vision_layers"])  # cn_clip's config holds it as a string: "[3,4,6,3]"
    with torch.device("meta"):
        theirs = CnCLIP(**info)
    assert count_params(theirs) == PUBLISHED["CN-CLIP-RN50"]


TRICKY = [
    "红色国旗在广场上飘扬",
    "紅色國旗",  # Traditional script: its own characters in the vocabulary
    "NBA球员詹姆斯在Los Angeles打球",  # mixed Chinese and English, capitals
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３，全角字符！",  # full-width letters, digits and punctuation
    "emoji 😀🇨🇳 和 ❤️ 符号",  # emoji: [UNK]
    "Café naïve résumé",  # accents stripped, as BERT lower-cases
    "tab\tnew\nline  spaces\u3000ideographic",  # whitespace of several kinds
    "a" * 250 + " unbelievably",  # a word over 200 characters: [UNK]
    "很长的句子" * 30,  # longer than 52: truncated with [SEP] kept
    "",
]


def test_tokenizer_ids_equal_cn_clips():
    clip = import_cn_clip()
    ours = bert_chinese()
    assert ours.vocab_size == 21128 and ours.context_length == 52
    assert torch.equal(ours(TRICKY), clip.tokenize(TRICKY, context_length=52))
    assert ours(TRICKY[-2])[0, 51].item() == ours.eot_id  # [SEP] survives truncation


def _pair(vision: dict):
    """cn_clip's CLIP with random weights and our config of the same shape."""
    import_cn_clip()
    from cn_clip.clip.model import CLIP as CnCLIP

    text = {"vocab_size": 21128, "text_attention_probs_dropout_prob": 0.1, "text_hidden_act": "gelu", "text_hidden_dropout_prob": 0.1,
            "text_hidden_size": 64, "text_initializer_range": 0.02, "text_intermediate_size": 128, "text_max_position_embeddings": 512,
            "text_num_attention_heads": 4, "text_num_hidden_layers": 2, "text_type_vocab_size": 2}
    torch.manual_seed(0)
    theirs = CnCLIP(embed_dim=48, image_resolution=64, **vision, **text).eval()
    vcfg = {"image_size": 64, "width": vision["vision_width"], "head_width": vision.get("vision_head_width", 64),
            "layers": list(vision["vision_layers"]) if isinstance(vision["vision_layers"], tuple) else vision["vision_layers"]}
    if vision["vision_patch_size"]:
        vcfg["patch_size"] = vision["vision_patch_size"]
    cfg = CLIPConfig.from_dict({"embed_dim": 48, "vision_cfg": vcfg, "quick_gelu": True,
                                "text_cfg": {"kind": "bert", "context_length": 52, "vocab_size": 21128, "width": 64, "heads": 4, "layers": 2,
                                             "intermediate_size": 128, "max_position_embeddings": 512}})
    return theirs, cfg


@pytest.mark.parametrize("vision", [
    {"vision_layers": (1, 1, 1, 1), "vision_width": 32, "vision_patch_size": None, "vision_head_width": 32},  # ModifiedResNet
    {"vision_layers": 2, "vision_width": 64, "vision_patch_size": 16, "vision_head_width": 32},  # ViT
])
def test_features_of_cn_clips_own_model_match_ours_after_conversion(vision):
    theirs, cfg = _pair(vision)
    with torch.no_grad():  # random BatchNorm statistics, so the ResNet's eval path is not the identity
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = CLIP(cfg).eval()
    state = from_cn_clip(theirs.state_dict())
    ours.load_state_dict(state, strict=True)
    assert to_cn_clip(state).keys() == theirs.state_dict().keys()  # exact round trip of names
    images = torch.randn(3, 3, 64, 64)
    text = bert_chinese()(["红色国旗", "一面蓝色的旗帜在风中飘扬", "NBA球员"])
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(images), theirs.encode_image(images), atol=1e-4, rtol=1e-4)
        assert torch.allclose(ours.encode_text(text), theirs.encode_text(text), atol=1e-4, rtol=1e-4)
        assert torch.allclose(ours.logit_scale, theirs.logit_scale)


def test_import_weights_reads_a_chinese_clip_checkpoint(tmp_path):
    """A checkpoint as Chinese-CLIP saves it: {"state_dict": ...} from DDP (`module.` names), fp16."""
    from training.checkpoint import load_model

    theirs, cfg = _pair({"vision_layers": (1, 1, 1, 1), "vision_width": 32, "vision_patch_size": None, "vision_head_width": 32})
    sd = {f"module.{k}": v.half() for k, v in theirs.state_dict().items()}
    torch.save({"epoch": 3, "step": 100, "name": "cn", "state_dict": sd}, tmp_path / "epoch_latest.pt")
    (tmp_path / "m.json").write_text(json.dumps(cfg.to_dict()))
    folder = import_weights(tmp_path / "epoch_latest.pt", tmp_path / "m.json", tmp_path / "out")
    model, tok, _ = load_model(folder)
    assert tok.kind == "bert" and tok.context_length == 52
    text = tok(["红色国旗", "蓝色圆形"])
    with torch.no_grad():
        expect = theirs.half().float().encode_text(text)  # the same fp16-rounded weights
        assert torch.allclose(model.encode_text(text), expect, atol=1e-3, rtol=1e-3)


def test_a_text_tower_starts_from_a_hugging_face_bert_folder(tmp_path):
    from safetensors.torch import save_file

    cfg = CLIPConfig.from_dict(preset_dict("debug-rn-bert"))
    donor = CLIP(cfg)
    hf = {f"bert.{k}": v.clone() for k, v in donor.text.bert.state_dict().items()}
    hf["bert.pooler.dense.weight"] = torch.zeros(128, 128)  # what save_pretrained also writes: ignored
    hf["cls.predictions.bias"] = torch.zeros(21128)
    (tmp_path / "rbt").mkdir()
    save_file(hf, str(tmp_path / "rbt" / "model.safetensors"))
    model = CLIP(cfg)
    loaded = load_hf_bert(model, tmp_path / "rbt")
    assert len(loaded) == len(donor.text.bert.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.text.bert.state_dict().values(), donor.text.bert.state_dict().values()))
    small = {k: v for k, v in hf.items() if "encoder.layer.1." not in k}
    save_file(small, str(tmp_path / "rbt" / "model.safetensors"))
    with pytest.raises(ValueError, match="no weights for"):
        load_hf_bert(CLIP(cfg), tmp_path / "rbt")


def test_imagenet_in_chinese_uses_chinese_clips_names_and_templates():
    from flows.configs import suite_config

    d = suite_config("data_specs/eval/imagenet-val-zh.yaml")
    assert len(d.classnames) == 1000 and d.classnames[:3] == ("丁鲷", "金鱼", "大白鲨") and d.language == "zh"
    assert len(d.templates) == 80 and d.templates[0] == "{}的照片。" and all("{}" in t for t in d.templates)
