"""Training: the fine-tuning / distillation loop on accelerate, its recipe, and a quick linear probe."""

from mvkit.train.loop import TrainResult, TrainUI, train
from mvkit.train.probe import fit_linear_head
from mvkit.train.recipe import PRESETS, TrainRecipe, build_recipe, load_recipe

__all__ = ["PRESETS", "TrainRecipe", "TrainResult", "TrainUI", "build_recipe", "fit_linear_head", "load_recipe", "train"]
