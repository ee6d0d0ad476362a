"""State-dict conversion between our layout and open_clip's / OpenAI CLIP's.

Ours differs from open_clip's in three places: the text tower lives under `text.` (open_clip's
CLIP keeps it at the top level), attention uses `in_proj.weight/bias` Linear names (open_clip:
`in_proj_weight/bias` of nn.MultiheadAttention), and nothing else. OpenAI's checkpoints use
open_clip's names. Round trip ours -> open_clip -> ours is exact (tests check it).
"""

from __future__ import annotations

import torch

_TEXT_TOP = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


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
        if k in ("attn_mask", "input_resolution", "context_length", "vocab_size") or k.endswith("attn_mask"):
            continue  # buffers / metadata in OpenAI's files
        nk = k.replace(".attn.in_proj_weight", ".attn.in_proj.weight").replace(".attn.in_proj_bias", ".attn.in_proj.bias")
        if nk.startswith(_TEXT_TOP):
            nk = "text." + nk
        out[nk] = v
    return out
