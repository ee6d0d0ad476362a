"""CLIP in plain PyTorch: ViT and ModifiedResNet image towers, a causal text transformer.

Read top to bottom; shapes are in names (x_BLD: batch, length, width). Parameter names follow
OpenAI's CLIP / open_clip so that state dicts convert by renaming little (training/convert.py).
Facts implemented here (CLIP paper, open_clip):
  * ViT: patchify conv without bias, class token, learned positions, an extra LayerNorm
    (`ln_pre`) after patch + position embedding, class-token pooling, linear projection.
  * ModifiedResNet: 3-conv stem, anti-aliased strided convs (avgpool before stride-1 conv),
    attention pooling instead of global average pooling.
  * Text: GPT-2 style causal transformer, context 77; the feature at the [EOS] token (the
    highest id in CLIP's vocabulary, our tokenizer's `eot_id`) is the text feature, because with
    causal attention only the last token has seen the whole caption. Or (`text_cfg.kind: bert`)
    Chinese-CLIP's BERT encoder pooled at [CLS] (training/bert.py), context 52.
  * Logit scale: learnable temperature initialised to 1/0.07, clamped at 100 so training cannot
    make logits arbitrarily sharp (CLIP paper, section 2.5). The clamp is applied to the parameter
    after each optimizer step (`clamp_logit_scale`), outside the graph, as open_clip does: a clamp
    inside forward() has zero gradient at the cap, so a scale that reached 100 could never come down.
  * Initialisation (`init_parameters`, OpenAI CLIP / open_clip): text tower attention in-proj
    std width^-0.5, out-proj and MLP c_proj std width^-0.5 (2 layers)^-0.5, c_fc std (2 width)^-0.5,
    zero attention biases; ViT attention as nn.MultiheadAttention initialises it (xavier-uniform
    in-proj, zero biases); ModifiedResNet attention-pool projections std in_features^-0.5 and the
    last BatchNorm of every bottleneck zero-initialised (each block starts as the identity).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.dataclass_json import from_json, to_json


@dataclass
class VisionConfig:
    image_size: int = 224
    layers: int | tuple[int, int, int, int] = 12  # a tuple means ModifiedResNet
    width: int = 768
    patch_size: int = 32
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_dropout: float = 0.0  # FLIP: drop this fraction of patch tokens while training


@dataclass
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    eot_id: int | None = None  # None: pool at argmax(token id), as OpenAI's CLIP does
    # "clip": the causal transformer above; "bert": a BERT encoder pooled at [CLS] (Chinese-CLIP,
    # training/bert.py), which also reads the fields below
    kind: str = "clip"
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_id: int = 0
    dropout: float = 0.1


@dataclass
class CLIPConfig:
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = False  # OpenAI's pretrained weights used QuickGELU

    JSON_NAMES: ClassVar[dict[str, str]] = {"vision_cfg": "vision", "text_cfg": "text"}  # open_clip's JSON shape

    @classmethod
    def from_dict(cls, d: dict) -> CLIPConfig:
        """From open_clip's JSON shape (`vision_cfg`, `text_cfg`; our field names work too)."""
        return from_json(cls, d)

    def to_dict(self) -> dict:
        """open_clip's JSON shape."""
        return to_json(self)


PRESETS = Path(__file__).with_name("model_configs")


def preset_dict(name: str | Path) -> dict:
    """A model config dict (open_clip's JSON shape) by preset name or JSON path.

    Names are open_clip's: `RN50`, `ViT-B-32`, ..., `debug-vit`, `debug-rn`; the suffix
    `-quickgelu` selects QuickGELU, as open_clip's `ViT-B-32-quickgelu` does (OpenAI's weights).
    """
    p = Path(name)
    if p.suffix == ".json":
        if not p.exists():
            raise FileNotFoundError(f"model config {p} does not exist")
        return json.loads(p.read_text())
    base, quick = (str(name).removesuffix("-quickgelu"), True) if str(name).endswith("-quickgelu") else (str(name), False)
    f = PRESETS / f"{base}.json"
    if not f.exists():
        known = sorted(x.stem for x in PRESETS.glob("*.json"))
        raise ValueError(f"unknown model preset {name!r}: known presets are {', '.join(known)} (add -quickgelu for QuickGELU), "
                         "or give a path to a JSON config")
    d = json.loads(f.read_text())
    if quick:
        d["quick_gelu"] = True
    return d


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention via F.scaled_dot_product_attention (flash/mem-efficient kernels)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        # as nn.MultiheadAttention initialises itself (open_clip's ViT keeps this init)
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x_BLD: torch.Tensor, causal: bool = False) -> torch.Tensor:
        B, L, D = x_BLD.shape
        q, k, v = self.in_proj(x_BLD).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y_BHLd = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(y_BHLd.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU() if quick_gelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads, mlp_ratio, quick_gelu) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for blk in self.resblocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, causal, use_reentrant=False)
            else:
                x = blk(x, causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int, quick_gelu: bool = False):
        super().__init__()
        w, heads = cfg.width, cfg.width // cfg.head_width
        self.patch_dropout = cfg.patch_dropout
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        scale = w ** -0.5
        n_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(n_patches + 1, w))
        self.ln_pre = nn.LayerNorm(w)  # CLIP's extra LayerNorm after patch + position embedding
        self.transformer = Transformer(w, cfg.layers, heads, cfg.mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, embed_dim))

    def forward(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        x_BDhw = self.conv1(img_BCHW)
        x_BLD = x_BDhw.flatten(2).transpose(1, 2)
        cls_B1D = self.class_embedding.to(x_BLD.dtype).expand(x_BLD.shape[0], 1, -1)
        x_BLD = torch.cat([cls_B1D, x_BLD], dim=1) + self.positional_embedding.to(x_BLD.dtype)
        if self.training and self.patch_dropout > 0:  # FLIP: keep a random subset of patches
            B, L, D = x_BLD.shape
            keep = max(1, int((L - 1) * (1 - self.patch_dropout)))
            idx = torch.rand(B, L - 1, device=x_BLD.device).argsort(dim=1)[:, :keep] + 1
            x_BLD = torch.cat([x_BLD[:, :1], x_BLD.gather(1, idx.unsqueeze(-1).expand(-1, -1, D))], dim=1)
        x_BLD = self.transformer(self.ln_pre(x_BLD))
        return self.ln_post(x_BLD[:, 0]) @ self.proj  # class-token pooling


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased downsampling: avgpool, then a stride-1 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", nn.Conv2d(inplanes, planes * 4, 1, stride=1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """Pool the final feature map with one multi-head attention query (the mean token)."""

    def __init__(self, spacial_dim: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x_BDhw: torch.Tensor) -> torch.Tensor:
        x_BLD = x_BDhw.flatten(2).transpose(1, 2)
        x_BLD = torch.cat([x_BLD.mean(dim=1, keepdim=True), x_BLD], dim=1) + self.positional_embedding.to(x_BLD.dtype)
        B, L, D = x_BLD.shape
        h = self.heads
        q = self.q_proj(x_BLD[:, :1]).view(B, 1, h, D // h).transpose(1, 2)
        k = self.k_proj(x_BLD).view(B, L, h, D // h).transpose(1, 2)
        v = self.v_proj(x_BLD).view(B, L, h, D // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, D)
        return self.c_proj(y)


class ModifiedResNet(nn.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int):
        super().__init__()
        layers, width = cfg.layers, cfg.width
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed = width * 32
        self.attnpool = AttentionPool2d(cfg.image_size // 32, embed, embed // cfg.head_width, embed_dim)
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        std = self.attnpool.c_proj.in_features ** -0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for name, p in layer.named_parameters():
                if name.endswith("bn3.weight"):
                    nn.init.zeros_(p)  # each bottleneck starts as the identity

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        mods = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        mods += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.act3(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int, quick_gelu: bool = False):
        super().__init__()
        self.eot_id = cfg.eot_id
        self.transformer_width = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width).normal_(std=0.01))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, 4.0, quick_gelu)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.randn(cfg.width, embed_dim) * cfg.width ** -0.5)
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        width, layers = self.transformer_width, len(self.transformer.resblocks)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std, attn_std, fc_std = width ** -0.5 * (2 * layers) ** -0.5, width ** -0.5, (2 * width) ** -0.5
        for blk in self.transformer.resblocks:
            nn.init.normal_(blk.attn.in_proj.weight, std=attn_std)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(blk.attn.in_proj.bias)
            nn.init.zeros_(blk.attn.out_proj.bias)
            nn.init.normal_(blk.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, text_BL: torch.Tensor) -> torch.Tensor:
        L = text_BL.shape[1]
        x_BLD = self.token_embedding(text_BL) + self.positional_embedding[:L]
        x_BLD = self.ln_final(self.transformer(x_BLD, causal=True))
        if self.eot_id is None:
            eot_B = text_BL.argmax(dim=-1)  # OpenAI's vocabulary puts [EOS] at the highest id
        else:
            eot_B = (text_BL == self.eot_id).int().argmax(dim=-1)
        return x_BLD[torch.arange(x_BLD.shape[0]), eot_B] @ self.text_projection


class CLIP(nn.Module):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        if isinstance(cfg.vision.layers, (tuple, list)):
            self.visual = ModifiedResNet(cfg.vision, cfg.embed_dim)
        else:
            self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.quick_gelu)
        if cfg.text.kind == "bert":
            from training.bert import BertText

            self.text = BertText(cfg.text, cfg.embed_dim)
        elif cfg.text.kind == "clip":
            self.text = TextTransformer(cfg.text, cfg.embed_dim, cfg.quick_gelu)
        else:
            raise ValueError(f"text_cfg.kind: {cfg.text.kind!r} is not a text tower (clip or bert)")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def add_logit_bias(self, value: float = 0.0) -> None:
        """The sigmoid (SigLIP) loss's learnable bias; models trained with it save `logit_bias`."""
        self.logit_bias = nn.Parameter(torch.tensor(float(value), device=self.logit_scale.device))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "logit_bias" in state_dict and not hasattr(self, "logit_bias"):
            self.add_logit_bias()  # a SigLIP-trained state dict
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.visual(image)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.text(text)
        return F.normalize(f, dim=-1) if normalize else f

    def forward(self, image: torch.Tensor, text: torch.Tensor):
        """(image features, text features, logit scale), features L2-normalised. The scale is not
        clamped here (that would zero its gradient at the cap): `clamp_logit_scale` runs after each step."""
        return self.encode_image(image, True), self.encode_text(text, True), self.logit_scale.exp()

    def get_similarity(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image [Bi, Bt], logits_per_text [Bt, Bi]), as OpenAI's `model(image, text)`."""
        img, txt, scale = self(image, text)
        logits_per_image = scale * img @ txt.T
        return logits_per_image, logits_per_image.T

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0, math.log(100))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        from training.bert import BertEncoder

        for m in self.modules():
            if isinstance(m, (Transformer, BertEncoder)):
                m.grad_checkpointing = enable

    def lock_image_tower(self) -> None:
        """LiT / Chinese-CLIP stage 1: freeze the image tower, BatchNorm statistics included."""
        for p in self.visual.parameters():
            p.requires_grad = False
        self.visual.eval()
        self._image_locked = True

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "_image_locked", False):
            self.visual.eval()  # keep frozen BatchNorm statistics frozen
        return self


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def numpy_seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
