"""Image tensors: batches travel as uint8 and are normalised where the model runs.

A batch of 512 images at 224 px is 77 MB as uint8 and 308 MB as float32: the loader pins the
uint8 batch, the trainer copies it to the GPU without blocking (`to_device`) and normalises it
there (CLIP's mean/std), which costs the GPU microseconds and the CPU nothing. Evaluation uses
`to_tensor` per image (float32 on the host); both give the same numbers (a test checks).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from training.data.decode import CLIP_MEAN, CLIP_STD, center_resize

_MEAN = np.array(CLIP_MEAN, dtype=np.float32)[:, None, None]
_STD = np.array(CLIP_STD, dtype=np.float32)[:, None, None]


def to_tensor(img: Image.Image) -> np.ndarray:
    """One image -> [3,H,W] float32 with CLIP's mean/std (the evaluation transform's last step)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (arr - _MEAN) / _STD


def eval_tensor(img: Image.Image, size: int) -> np.ndarray:
    """CLIP's evaluation transform: centre square, bicubic resize, normalise."""
    return to_tensor(center_resize(img, size))


_STATS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean/std as [1,3,1,1] tensors on `device`, made once (a copy per step would make the
    host wait for the device)."""
    if device not in _STATS:
        _STATS[device] = (torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1), torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1))
    return _STATS[device]


def normalise(images_BHW3: torch.Tensor) -> torch.Tensor:
    """[B,H,W,3] uint8 (any device) -> [B,3,H,W] float32 with CLIP's mean/std."""
    mean, std = _mean_std(images_BHW3.device)
    return (images_BHW3.permute(0, 3, 1, 2).float().div_(255.0) - mean).div_(std).contiguous()


def to_device(images_BHW3: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (pinned) uint8 batch to `device` without blocking the host, then normalised there."""
    return normalise(images_BHW3.to(device, non_blocking=True))
