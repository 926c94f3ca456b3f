"""The training recipe: every option of `mvkit train`, its presets, and its YAML form.

The run writes the fully resolved recipe (recipe.yaml) next to its outputs, so a run can be repeated or
resumed from its folder alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from mvkit.errors import MvkitError


@dataclass
class TrainRecipe:
    model: str = "mobilevit_xxs"
    data: str = "builtin:fashion"
    preset: str = "finetune"
    out: str = "runs/train"
    # data
    val: str | None = None  # separate val folder
    val_fraction: float = 0.2
    split_seed: int = 0
    img_size: int | None = None  # None: the model's default input size
    crop_pct: float | None = None
    scale_min: float = 0.5  # light augmentation: random-resized-crop area in [scale_min, 1], horizontal flip
    balanced: bool = False  # class-balanced sampling, weights 1/class count
    workers: int = 0
    # model
    pretrained: bool = True
    weights: str | None = None
    freeze_backbone: bool = False
    # optimisation (defaults: the guide's fine-tuning recipe)
    epochs: int = 100
    batch_size: int = 32
    lr: float = 3e-5
    stem_lr: float | None = 1e-5  # None: same as lr
    head_lr: float | None = 5e-5
    layer_decay: float | None = None  # e.g. 0.75: each block deeper gets lr / 0.75 more (timm's layer decay)
    weight_decay: float = 0.01
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0
    mix_prob: float = 0.5
    mix_switch_prob: float = 0.5
    ema: bool = False
    ema_decay: float = 0.999
    patience: int | None = 10  # early stopping: epochs without a lower val loss
    # distillation
    teacher: str | None = None
    teacher_weights: str | None = None
    distill_alpha: float = 0.5  # weight of the label loss; 1 - alpha goes to the teacher
    distill_temperature: float = 4.0
    # running
    mixed_precision: str = "no"  # no, bf16, fp16
    seed: int = 0
    deterministic: bool = False
    save_every_steps: int = 0  # 0: save the resume state at each epoch end only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> "TrainRecipe":
        if self.preset not in PRESETS:
            raise MvkitError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise MvkitError(f"mixed_precision must be no, bf16 or fp16, not {self.mixed_precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise MvkitError("epochs, batch_size and lr must be positive")
        if self.uses_mixing and self.batch_size % 2:
            raise MvkitError(f"MixUp/CutMix need an even batch size, got {self.batch_size}")
        if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
            raise MvkitError("distill_alpha must be in [0, 1] and distill_temperature positive")
        return self

    @property
    def uses_mixing(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


# What each preset changes from the dataclass defaults (which are the guide's fine-tuning recipe).
PRESETS: dict[str, dict[str, Any]] = {
    "finetune": {},
    "head-only": {"freeze_backbone": True, "lr": 1e-3, "stem_lr": None, "head_lr": None, "epochs": 30},
    "scratch": {"pretrained": False, "lr": 2e-3, "stem_lr": None, "head_lr": None, "weight_decay": 0.05,
                "warmup_epochs": 3.0, "epochs": 100, "patience": None},
}
FIELD_NAMES = {f.name for f in fields(TrainRecipe)}


def build_recipe(preset: str | None = None, recipe_file: Path | None = None, **overrides: Any) -> TrainRecipe:
    """Preset defaults, then the YAML file, then explicit overrides (None means 'not given')."""
    values: dict[str, Any] = {}
    if recipe_file is not None:
        loaded = yaml.safe_load(Path(recipe_file).read_text()) or {}
        unknown = set(loaded) - FIELD_NAMES
        if unknown:
            raise MvkitError(f"{recipe_file}: unknown recipe keys {sorted(unknown)}; known: {sorted(FIELD_NAMES)}")
        values.update(loaded)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - FIELD_NAMES
    if unknown:
        raise MvkitError(f"unknown recipe options {sorted(unknown)}")
    preset = preset or values.get("preset") or "finetune"
    if preset not in PRESETS:
        raise MvkitError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    recipe = replace(TrainRecipe(), **PRESETS[preset], preset=preset)
    return replace(recipe, **{**values, **given}).validate()


def load_recipe(path: Path) -> TrainRecipe:
    data = yaml.safe_load(Path(path).read_text())
    return replace(TrainRecipe(), **data).validate()
