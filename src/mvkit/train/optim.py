"""Optimizer and schedule: AdamW over parameter groups with their own learning rates, cosine with warm-up.

Groups: stem / body / head get lr scales (the guide: stem 1e-5, body 3e-5, head 5e-5), or timm's layer-wise
decay when layer_decay is set; norms and biases never get weight decay. timm's schedulers multiply each
group's `lr_scale`, so one schedule drives all groups.
"""

from __future__ import annotations

import re

import torch
from timm.optim import param_groups_layer_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

from mvkit.train.recipe import TrainRecipe


def _stem_pattern(model: nn.Module) -> str | None:
    matcher = model.group_matcher(coarse=True) if hasattr(model, "group_matcher") else {}
    stem = matcher.get("stem")
    if isinstance(stem, (list, tuple)):
        stem = "|".join(s if isinstance(s, str) else s[0] for s in stem)
    return stem


def param_groups(model: nn.Module, recipe: TrainRecipe) -> list[dict]:
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if recipe.layer_decay is not None:
        groups = param_groups_layer_decay(model, weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay)
        return [g for g in groups if any(p.requires_grad for p in g["params"])]

    head_ids = {id(p) for p in model.get_classifier().parameters()}
    stem_pattern = _stem_pattern(model)
    scales = {"stem": (recipe.stem_lr or recipe.lr) / recipe.lr, "body": 1.0, "head": (recipe.head_lr or recipe.lr) / recipe.lr}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in trainable.items():
        part = "head" if id(param) in head_ids else "stem" if stem_pattern and re.match(stem_pattern, name) else "body"
        no_decay = param.ndim <= 1  # norms, biases, scalars
        buckets.setdefault((part, no_decay), []).append(param)
    return [{"params": params, "lr_scale": scales[part],
             "weight_decay": 0.0 if no_decay else recipe.weight_decay, "group": part}
            for (part, no_decay), params in buckets.items()]


def build_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, recipe), lr=recipe.lr, weight_decay=recipe.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainRecipe, steps_per_epoch: int) -> CosineLRScheduler:
    """Cosine decay over all optimizer steps, after a linear warm-up; stepped once per update.

    Groups hold the base lr; the scheduler applies each group's lr_scale, from step 0 on."""
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(1, recipe.epochs * steps_per_epoch),
        lr_min=recipe.min_lr,
        warmup_t=int(recipe.warmup_epochs * steps_per_epoch),
        warmup_lr_init=recipe.lr * 0.01,
        t_in_epochs=False,
    )
    scheduler.step_update(0)
    return scheduler
