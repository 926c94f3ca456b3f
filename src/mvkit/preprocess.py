"""Preprocess: the single description of how pixels become a model input.

The same value drives the eval transform here, the Core ML ImageType at export, every runtime Predictor and
the live engine, so a model sees identical inputs from training to phone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming", "random")


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

    def eval_transform(self):
        """PIL RGB image -> normalized CHW float tensor; timm's own eval transform, so results match timm's."""
        from timm.data import create_transform

        return create_transform(
            input_size=(3, self.size, self.size),
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
        )
