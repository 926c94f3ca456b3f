"""Turning photos into model inputs during training.

Augmentation (random-resized crop, flip) runs on PIL images and yields un-normalised [0, 1] tensors; each
model then gets the batch resized and normalised by its own Preprocess. That way a distillation teacher sees
the same augmented (and mixed) photos as the student, at its own size and with its own mean/std, never the
student's tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mvkit.preprocess import Preprocess


def train_transform(size: int, interpolation: str, scale_min: float, auto_augment: str | None = None):
    """Augmentation from timm: random-resized crop (area scale_min..1), horizontal flip, and the auto_augment
    policy if one is given (e.g. RandAugment, "rand-m9-mstd0.5"); no colour jitter."""
    from timm.data import create_transform

    return create_transform(input_size=(3, size, size), is_training=True, scale=(scale_min, 1.0), hflip=0.5,
                            color_jitter=None, auto_augment=auto_augment, interpolation=interpolation,
                            normalize=False)


def to_unit_range(raw: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (what the loader yields: 4x less to copy to a GPU) -> float in [0, 1]."""
    return raw.float().div_(255.0) if raw.dtype == torch.uint8 else raw.float()


def model_input(raw: torch.Tensor, preprocess: Preprocess, size: int | None = None) -> torch.Tensor:
    """Resize a [0, 1] batch to `size` (default: the model's) if needed, then normalise with its mean/std."""
    size = size or preprocess.size
    if raw.shape[-1] != size or raw.shape[-2] != size:
        mode = "bicubic" if preprocess.interpolation == "bicubic" else "bilinear"
        raw = F.interpolate(raw, size=(size, size), mode=mode, antialias=True, align_corners=False).clamp(0.0, 1.0)
    mean = torch.tensor(preprocess.mean, device=raw.device, dtype=raw.dtype).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=raw.device, dtype=raw.dtype).view(1, 3, 1, 1)
    return (raw - mean) / std
