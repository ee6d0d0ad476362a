"""Contrastive losses. The distributed version is open_clip's `gather_with_grad` + local loss.

Each worker all-gathers every worker's features *with gradients*, then computes only its own
rows of the N x N similarity matrix (its images against all texts, its texts against all images).
Summed over workers this is exactly the single-process loss on the concatenated batch, in
value and in gradients (tests/training/test_loss.py checks both over 2 gloo processes), and
memory per worker grows with the local rows only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(img_BD: torch.Tensor, txt_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All workers' features, concatenated in rank order, differentiable (all_gather with grad)."""
    _, world = _world()
    if world == 1:
        return img_BD, txt_BD
    all_img = torch.cat(torch.distributed.nn.all_gather(img_BD), dim=0)
    all_txt = torch.cat(torch.distributed.nn.all_gather(txt_BD), dim=0)
    return all_img, all_txt


def clip_loss(img_BD: torch.Tensor, txt_BD: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over the similarity matrix (local rows against global columns).

    With one process this is CLIP's loss; with N processes the mean over processes equals the
    loss on the concatenated batch.
    """
    rank, _ = _world()
    all_img, all_txt = gather_features(img_BD, txt_BD)
    B = img_BD.shape[0]
    logits_per_image = logit_scale * img_BD @ all_txt.T   # [B, N*B]
    logits_per_text = logit_scale * txt_BD @ all_img.T    # [B, N*B]
    labels = torch.arange(B, device=img_BD.device) + rank * B
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(img_BD: torch.Tensor, txt_BD: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """Sigmoid loss (SigLIP): every pair is an independent binary problem; local rows, global columns."""
    rank, _world_size = _world()
    _all_img, all_txt = gather_features(img_BD, txt_BD)
    B = img_BD.shape[0]
    logits = logit_scale * img_BD @ all_txt.T + logit_bias
    labels = -torch.ones_like(logits)
    labels[torch.arange(B), torch.arange(B) + rank * B] = 1.0
    return -F.logsigmoid(labels * logits).sum() / B
