"""A BERT text tower, as Chinese-CLIP uses (RoBERTa-wwm-ext / RBT3 are BERT-architecture models).

    tokens [B, L] -> embeddings (word + learned position + token type, LayerNorm, dropout)
                  -> N post-LN blocks: self-attention (padding masked) + residual + LayerNorm,
                                       GELU MLP + residual + LayerNorm
                  -> the [CLS] position (index 0) @ text_projection -> [B, embed_dim]

Facts from Chinese-CLIP's own code (`cn_clip/clip/modeling_bert.py`, `model.py`), which this
follows so its checkpoints load by renaming only the top level (training/convert.py):
  * Parameter names are Hugging Face BERT's (`embeddings.word_embeddings`, `encoder.layer.N.
    attention.self.query`, ...); there is no pooler (Chinese-CLIP removed it and drops
    `bert.pooler.*` from checkpoints); the feature is the last layer's [CLS] state times a
    `text_projection` [width, embed_dim] matrix initialised with std width^-0.5.
  * GELU is the exact (erf) one; LayerNorm eps 1e-12; dropout 0.1 on embeddings, attention
    probabilities and block outputs while training.
  * Padding (id 0, `[PAD]`) is masked out of attention; every text starts with [CLS], so the
    pooled row always attends to something.
  * Initialisation (BertPreTrainedModel._init_weights): Linear and Embedding weights normal(0,
    0.02), biases zero, LayerNorm weight one and bias zero. Real runs start from a pretrained
    Chinese BERT instead (`training.convert.load_hf_bert`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, width: int, max_positions: int, type_vocab_size: int, pad_id: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.position_embeddings = nn.Embedding(max_positions, width)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids_BL: torch.Tensor) -> torch.Tensor:
        pos_L = torch.arange(ids_BL.shape[1], device=ids_BL.device)
        x = self.word_embeddings(ids_BL) + self.position_embeddings(pos_L)[None] + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)


class BertDenseNorm(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm (BertSelfOutput and BertOutput)."""

    def __init__(self, d_in: int, width: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(d_in, width)
        self.LayerNorm = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.self = BertSelfAttention(width, heads)
        self.output = BertDenseNorm(width, width, dropout)
        self.attn_dropout = dropout

    def forward(self, x_BLD: torch.Tensor, keep_B11L: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        h = self.self.heads
        q, k, v = (lin(x_BLD).view(B, L, h, D // h).transpose(1, 2) for lin in (self.self.query, self.self.key, self.self.value))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep_B11L, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.output(ctx.transpose(1, 2).reshape(B, L, D), x_BLD)


class BertIntermediate(nn.Module):
    def __init__(self, width: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(width, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact erf GELU, as BERT's


class BertLayer(nn.Module):
    def __init__(self, width: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.attention = BertAttention(width, heads, dropout)
        self.intermediate = BertIntermediate(width, intermediate)
        self.output = BertDenseNorm(intermediate, width, dropout)

    def forward(self, x_BLD: torch.Tensor, keep_B11L: torch.Tensor) -> torch.Tensor:
        x_BLD = self.attention(x_BLD, keep_B11L)
        return self.output(self.intermediate(x_BLD), x_BLD)


class BertEncoder(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(width, heads, intermediate, dropout) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x_BLD: torch.Tensor, keep_B11L: torch.Tensor) -> torch.Tensor:
        for blk in self.layer:
            if self.grad_checkpointing and self.training:
                x_BLD = checkpoint(blk, x_BLD, keep_B11L, use_reentrant=False)
            else:
                x_BLD = blk(x_BLD, keep_B11L)
        return x_BLD


class BertModel(nn.Module):
    """Hugging Face BertModel's parameters without the pooler."""

    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg.vocab_size, cfg.width, cfg.max_position_embeddings, cfg.type_vocab_size,
                                         cfg.pad_id, cfg.dropout)
        self.encoder = BertEncoder(cfg.width, cfg.layers, cfg.heads, cfg.intermediate_size, cfg.dropout)


class BertText(nn.Module):
    """The text tower: BERT, pooled at [CLS], projected to the shared embedding."""

    def __init__(self, cfg, embed_dim: int):
        super().__init__()
        self.pad_id = cfg.pad_id
        self.bert = BertModel(cfg)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        for m in self.bert.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.text_projection, std=self.text_projection.shape[0] ** -0.5)

    def forward(self, text_BL: torch.Tensor) -> torch.Tensor:
        keep_B11L = (text_BL != self.pad_id)[:, None, None, :]
        x_BLD = self.bert.encoder(self.bert.embeddings(text_BL), keep_B11L)
        return x_BLD[:, 0] @ self.text_projection
