"""Preprocess: the single description of how pixels become a model input.

The same value drives the eval transform here, the Core ML ImageType at export, every runtime Predictor and
the live engine, so a model sees identical inputs from training to phone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

# timm's names of Pillow's resampling filters (what torchvision's Resize hands to Pillow for a PIL image)
PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
INTERPOLATIONS = tuple(PIL_FILTERS)


@dataclass(frozen=True)
class Preprocess:
    size: int  # square input side in pixels, after the center crop
    crop_pct: float  # the shorter side is resized to size / crop_pct, then center-cropped to size
    interpolation: str  # "bicubic", "bilinear", "nearest"
    mean: tuple[float, float, float]  # per channel, on pixels scaled to [0, 1]
    std: tuple[float, float, float]

    def __post_init__(self):
        """Refuse values no model can be fed with (a hand-edited sidecar, a --img-size 0)."""
        from mvkit.errors import MvkitError

        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 16 <= self.size <= 4096:
            raise MvkitError(f"preprocess size must be a whole number of pixels from 16 to 4096, not {self.size!r}")
        if not 0.05 <= self.crop_pct <= 2.0:
            raise MvkitError(f"preprocess crop_pct must be in [0.05, 2], not {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise MvkitError(f"preprocess interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"not {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise MvkitError(f"preprocess mean and std need 3 values (R, G, B), got {self.mean} and {self.std}")
        if not all(v > 0 and math.isfinite(v) for v in self.std) or not all(math.isfinite(v) for v in self.mean):
            raise MvkitError(f"preprocess std must be positive and mean finite, got mean {self.mean}, std {self.std}")

    @classmethod
    def from_timm_cfg(cls, cfg: dict[str, Any]) -> "Preprocess":
        """Read timm's pretrained_cfg (input_size, crop_pct, interpolation, mean, std)."""
        _, height, width = cfg.get("input_size", (3, 224, 224))
        if height != width:
            raise ValueError(f"only square inputs are supported, got {height}x{width}")
        return cls(
            size=int(height),
            crop_pct=float(cfg.get("crop_pct", 0.875)),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        )

    def to_timm_cfg(self) -> dict[str, Any]:
        return {
            "input_size": (3, self.size, self.size),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
        }

    def with_changes(self, **changes: Any) -> "Preprocess":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocess":
        if isinstance(data["size"], float) and not data["size"].is_integer():
            raise ValueError(f"size must be a whole number, not {data['size']}")
        return cls(
            size=int(data["size"]),
            crop_pct=float(data["crop_pct"]),
            interpolation=str(data["interpolation"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )

    def eval_geometry(self, image: Image.Image) -> Image.Image:
        """The resize and centre crop of timm's eval transform (`timm.data.create_transform(is_training=False)`):
        the shorter side to floor(size / crop_pct) by torchvision's Resize rule (the longer side truncated), with
        the same Pillow filter, then the centre size x size crop (black bars where the photo is smaller, as
        torchvision pads). Written here rather than called so a Predictor of an exported file needs no torch,
        torchvision or timm (importing them took 4 s a process: every `mvkit predict`, batch worker and Ray
        actor); tests/test_images.py checks it gives timm's transform's exact numbers."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        scaled = math.floor(self.size / self.crop_pct)
        width, height = image.size
        short, long = min(width, height), max(width, height)
        resized = (scaled, int(scaled * long / short)) if width <= height else (int(scaled * long / short), scaled)
        if resized != image.size:
            image = image.resize(resized, PIL_FILTERS[self.interpolation])
            width, height = resized
        if width < self.size or height < self.size:  # crop_pct above 1: pad around the photo, left/top first
            canvas = Image.new("RGB", (max(width, self.size), max(height, self.size)))
            canvas.paste(image, (max(self.size - width, 0) // 2, max(self.size - height, 0) // 2))
            image, (width, height) = canvas, canvas.size
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))

    def eval_array(self, image: Image.Image) -> np.ndarray:
        """PIL photo -> normalised float32 [3, size, size]: eval_geometry, then pixels / 255, minus mean, over std,
        in float32 in that order (torchvision's ToTensor and Normalize, so the numbers are the same)."""
        pixels = np.asarray(self.eval_geometry(image), dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return np.ascontiguousarray((pixels - mean) / std)

    def eval_transform(self) -> "EvalTransform":
        """PIL photo -> normalised CHW float tensor, for datasets and DataLoaders (eval_array as a tensor)."""
        return EvalTransform(self)


@dataclass(frozen=True)
class EvalTransform:
    """Preprocess.eval_array as a torch tensor; a plain object, so DataLoader workers can pickle it."""
    preprocess: Preprocess

    def __call__(self, image: Image.Image):
        import torch

        return torch.from_numpy(self.preprocess.eval_array(image))
