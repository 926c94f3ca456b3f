"""The training recipe: every option of `mvkit train`, its presets, and its YAML form.

The run writes the fully resolved recipe (recipe.yaml) next to its outputs, so a run can be repeated or
resumed from its folder alone.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from mvkit.data.images import SizeSummary
from mvkit.errors import MvkitError


# The recipe's numbers and what each may be: `validate` names the one that is wrong and its value
NUMBER_RULES: dict[str, tuple] = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    **{name: (lambda v: v > 0, "positive") for name in ("lr", "stem_lr", "head_lr")},
    "layer_decay": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "crop_pct": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "val_fraction": (lambda v: 0.0 < v < 1.0, "between 0 and 1"),
    "workers": (lambda v: v >= 0, ">= 0"),
    "save_every_steps": (lambda v: v >= 0, ">= 0"),
    "patience": (lambda v: v >= 1, ">= 1 (or empty: no early stop)"),
    "drop_rate": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "drop_path_rate": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    **{name: (lambda v: v >= 0, ">= 0") for name in ("weight_decay", "warmup_epochs", "min_lr", "mixup_alpha",
                                                  "cutmix_alpha")},
    "label_smoothing": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    **{name: (lambda v: 0.0 <= v <= 1.0, "in [0, 1]") for name in ("mix_prob", "mix_switch_prob")},
    "scale_min": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "ema_decay": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "distill_alpha": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "distill_temperature": (lambda v: v > 0, "positive"),
}


@dataclass
class TrainRecipe:
    model: str = "mobilevit_xxs"
    data: str = "builtin:fashion"
    preset: str = "guide"  # the defaults below are the guide's recipe; build_recipe applies a preset over them
    out: str = "runs/train"
    # data
    val: str | None = None  # separate val folder
    val_fraction: float = 0.2
    split_seed: int = 0
    img_size: int | None = None  # None: the model's default, or with native_size the photos' (native_input_size)
    native_size: bool = False
    # progressive resizing: the first epoch trains at this size, later ones larger (train_size_at); None: off
    progressive_from: int | None = None
    crop_pct: float | None = None
    scale_min: float = 0.5  # light augmentation: random-resized-crop area in [scale_min, 1], horizontal flip
    auto_augment: str | None = None  # timm's policy string, e.g. "rand-m9-mstd0.5" (RandAugment)
    balanced: bool = False  # class-balanced sampling, weights 1/class count
    workers: int = 0
    # model
    pretrained: bool = True
    weights: str | None = None
    freeze_backbone: bool = False
    drop_rate: float = 0.0  # dropout before the classifier (timm's drop_rate)
    drop_path_rate: float = 0.0  # stochastic depth (timm's drop_path_rate)
    # optimisation (the defaults are the guide's fine-tuning recipe: the `guide` preset)
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
    channels_last: bool = True  # NHWC weights and batches: faster convolutions on CPUs (and GPUs' tensor cores)
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
        for name, (allowed, requirement) in NUMBER_RULES.items():
            value = getattr(self, name)
            if value is not None and not allowed(value):
                raise MvkitError(f"{name} must be {requirement}, not {value}")
        if self.img_size is not None and not 16 <= self.img_size <= 4096:
            raise MvkitError(f"img_size must be from 16 to 4096 pixels, not {self.img_size}")
        if self.progressive_from is not None and not 32 <= self.progressive_from <= 4096:
            raise MvkitError(f"progressive_from must be from 32 to 4096 pixels, not {self.progressive_from}")
        if self.img_size is not None:  # else checked once the run knows its size
            check_progressive(self, self.img_size)
        if self.auto_augment:
            from mvkit.train.batches import train_transform

            try:
                train_transform(32, "bicubic", self.scale_min, self.auto_augment)
            except Exception as exc:  # timm raises assertion, key and value errors for a bad policy string
                raise MvkitError(f"auto_augment {self.auto_augment!r} is not a timm policy (e.g. rand-m7-mstd0.5-inc1, "
                                 f"augmix-m5-w3, v0): {type(exc).__name__} {exc}") from None
        if self.teacher and ("/" in self.teacher or self.teacher.endswith(".safetensors")) and \
                not Path(self.teacher).exists():
            raise MvkitError(f"--teacher {self.teacher} does not exist")
        if self.teacher and not self.teacher_weights and not Path(self.teacher).is_file():
            # a name builds the teacher with a new, random head for the data's classes: nothing to learn from
            raise MvkitError(f"--teacher {self.teacher} is a model name: its classifier for this data's classes would "
                             "be untrained; give a checkpoint fine-tuned on this data (from mvkit train), or the name "
                             "with --teacher-weights of one")
        if self.uses_mixing and self.batch_size % 2:
            raise MvkitError(f"MixUp/CutMix need an even batch size, got {self.batch_size}")
        return self

    @property
    def uses_mixing(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


# What each preset changes from the dataclass defaults (the guide's recipe). Each was chosen by measurement on
# flowers128: BENCHMARKS.md, "Fine-tuning on flowers128", has the runs (python benchmarks/finetune_flowers.py).
FINETUNE = {
    # one lr for the whole net with a 1-epoch warm-up: the guide's 3e-5 (stem 1e-5, head 5e-5) reaches
    # 65% after 3 epochs where this reaches 80%
    "lr": 5e-4, "stem_lr": None, "head_lr": None, "warmup_epochs": 1.0, "min_lr": 1e-6, "weight_decay": 0.05,
    # 2,784 photos: the body memorises them within 6 epochs without regularisation (train 95% against val
    # 76% under the eval transform), so MixUp/CutMix on every batch, dropout and stochastic depth
    "mix_prob": 1.0, "drop_rate": 0.2, "drop_path_rate": 0.1,
    # 60 epochs with EMA, or 30 at 224 px, gain 1.5-2 points for 2.5-4x the time (benchmarks/finetune_sweep.py)
    "epochs": 15, "patience": None, "native_size": True,
}
# Preset values tuned for a number of epochs: a shorter run multiplies each by epochs / that number, unless the
# value is given. MixUp/CutMix regularise a long schedule and hold a short one back (4 epochs of `finetune`,
# mixing every batch against none: flowers128 77.4% against 79.5%, builtin:fashion 83.9% against 85.9%).
SCALED_TO_EPOCHS: dict[str, dict[str, int]] = {"finetune": {"mix_prob": 15}}
PRESETS: dict[str, dict[str, Any]] = {
    "finetune": FINETUNE,
    "guide": {},  # the guide's recipe, kept for reference
    # crop 1.0: a linear probe on the frozen features scores 77.4% on the whole photo against 75.5% on its
    # centre 0.875 (scikit-learn logistic regression, flowers128 at 224 px)
    "head-only": {"freeze_backbone": True, "lr": 1e-3, "stem_lr": None, "head_lr": None, "epochs": 10,
                  "crop_pct": 1.0},
    # distillation at T 1: MobileViT-XXS from the finetune row's Lite0 scored 72.3% against 63.8% at the guide's
    # T 4 and 62.8% without a teacher (15 epochs); a teacher trained with MixUp/CutMix and label smoothing has
    # soft outputs already, which T 4 flattens further
    "scratch": {"pretrained": False, "lr": 2e-3, "stem_lr": None, "head_lr": None, "weight_decay": 0.05,
                "warmup_epochs": 3.0, "epochs": 100, "patience": None, "native_size": True,
                "distill_temperature": 1.0},
}
FIELD_NAMES = {f.name for f in fields(TrainRecipe)}
# field name -> its type as text: "float", "int | None", ...
_HINTS = {name: hint.__name__ if isinstance(hint, type) else str(hint)
          for name, hint in get_type_hints(TrainRecipe).items()}


def native_input_size(recipe: TrainRecipe, model_size: int, photos: SizeSummary | None) -> int | None:
    """The input size to train at when none is given, or None to keep the model's.

    A network that trains its body adapts to the photos' own scale, and upscaling them costs compute without
    adding much detail: on flowers128 (128 px photos) EfficientNet-Lite0 fine-tuned for 15 epochs reached 82.1% at
    128 px and 83.1% at its default 224 px, 3.1x the pixels per image (the last epochs: 82.8% and 82.7%;
    BENCHMARKS.md, "Fine-tuning"); in the same 19 minutes, 224 px reached 74.2% (3 epochs). A frozen
    body keeps the scale its features were learned at: its linear probe lost 4 points at 128 px. Sizes are
    multiples of 32 (the networks' total stride), from 64 px (smaller is not measured) up to the model's default."""
    if recipe.img_size is not None or not recipe.native_size or recipe.freeze_backbone or photos is None:
        return None
    native = 32 * max(2, round(photos.short_side_median / 32))
    return native if native < model_size else None


# Progressive resizing reaches the full input size after this share of the epochs, so the last third trains (and
# settles BatchNorm statistics) at the size it is validated and exported at.
PROGRESSIVE_SHARE = 2 / 3


def check_progressive(recipe: TrainRecipe, final_size: int) -> None:
    if recipe.progressive_from is not None and recipe.progressive_from >= final_size:
        raise MvkitError(f"progressive_from {recipe.progressive_from} px must be below the input size "
                         f"{final_size} px it rises to")


def train_size_at(recipe: TrainRecipe, epoch: int, final_size: int) -> int:
    """The training input size of `epoch` (0-based): `final_size`, or with progressive resizing (EfficientNetV2's
    progressive learning, sizes only) a size rising linearly from `progressive_from` to `final_size` over the first
    PROGRESSIVE_SHARE of the epochs, in multiples of 32. Validation always runs at `final_size`."""
    start = recipe.progressive_from
    if start is None or start >= final_size or recipe.epochs < 2:  # the last epoch trains at the final size
        return final_size
    ramp = max(1, round(recipe.epochs * PROGRESSIVE_SHARE) - 1)  # epochs 0..ramp rise; later ones are final
    if epoch == 0:
        return start
    if epoch >= ramp:
        return final_size
    size = start + (final_size - start) * epoch / ramp
    return min(final_size, max(start, 32 * round(size / 32)))


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The keys of a YAML recipe, each checked and converted to its field's type (PyYAML reads `1e-4` as a
    string: YAML 1.1 wants a dot in a float)."""
    path = Path(path)
    if not path.is_file():
        raise MvkitError(f"recipe file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise MvkitError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except UnicodeDecodeError:
        raise MvkitError(f"{path} is not a UTF-8 text file") from None
    if not isinstance(loaded, dict):
        raise MvkitError(f"{path} must hold `key: value` lines, not a {type(loaded).__name__}")
    unknown = sorted(set(map(str, loaded)) - FIELD_NAMES)
    if unknown:
        meant = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, FIELD_NAMES, n=1))
                 else key for key in unknown]
        raise MvkitError(f"{path}: unknown recipe keys: {', '.join(meant)}; known: {', '.join(sorted(FIELD_NAMES))}")
    return {name: coerce(name, value, str(path)) for name, value in loaded.items()}


def coerce(name: str, value: Any, where: str) -> Any:
    """`value` as the type of recipe field `name`, or a clear error."""
    hint = _HINTS[name]
    if value is None:
        if "None" in hint:
            return None
        raise MvkitError(f"{where}: {name} needs a value")
    try:
        if hint.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false", "yes", "no"):
                return str(value).lower() in ("true", "yes")
            raise ValueError
        if hint.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value)) if isinstance(value, str) else int(value)
        if hint.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(value, (dict, list)):
            raise ValueError
        return str(value)
    except (ValueError, TypeError):  # TypeError: a list or mapping where a number goes
        kind = hint.split(" ")[0]
        raise MvkitError(f"{where}: {name} must be {kind}, not {value!r}") from None


def build_recipe(preset: str | None = None, recipe_file: Path | None = None, **overrides: Any) -> TrainRecipe:
    """Preset defaults, then the YAML file, then explicit overrides (None means 'not given')."""
    values: dict[str, Any] = {}
    if recipe_file is not None:
        values.update(read_recipe_file(recipe_file))
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - FIELD_NAMES
    if unknown:
        raise MvkitError(f"unknown recipe options {sorted(unknown)}")
    preset = preset or values.get("preset") or "finetune"
    if preset not in PRESETS:
        raise MvkitError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = {**values, **given}
    recipe = replace(replace(TrainRecipe(), **PRESETS[preset], preset=preset), **chosen)
    scaled = {name: getattr(recipe, name) * min(1.0, recipe.epochs / full_epochs)
              for name, full_epochs in SCALED_TO_EPOCHS.get(preset, {}).items() if name not in chosen}
    return with_absolute_paths(replace(recipe, **scaled)).validate()


PATH_FIELDS = ("model", "data", "val", "teacher", "teacher_weights", "weights")


def with_absolute_paths(recipe: TrainRecipe) -> TrainRecipe:
    """Files and folders the recipe names, made absolute, so recipe.yaml works from any working directory (the
    run folder itself is given again on --resume, so it can move)."""
    folders = ("data", "val")  # the others name files; a zoo name is left as it is
    changes = {name: str(Path(getattr(recipe, name)).resolve()) for name in PATH_FIELDS
               if getattr(recipe, name) and (Path(getattr(recipe, name)).is_file()
                                             or (name in folders and Path(getattr(recipe, name)).exists()))}
    return replace(recipe, **changes)


def load_recipe(path: Path) -> TrainRecipe:
    return replace(TrainRecipe(), **read_recipe_file(path)).validate()
