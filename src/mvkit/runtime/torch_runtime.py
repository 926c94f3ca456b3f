"""PyTorch predictors: an mvkit checkpoint (eager) or a TorchScript file."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor


class TorchPredictor(Predictor):
    def __init__(self, artifact: Artifact, model: nn.Module):
        super().__init__(artifact)
        self.model = model.eval()

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(batch)).float().softmax(dim=-1).numpy()


def checkpoint_predictor(artifact: Artifact) -> TorchPredictor:
    from mvkit.models import load_checkpoint

    return TorchPredictor(artifact, load_checkpoint(artifact.path))


def model_predictor(model: nn.Module) -> TorchPredictor:
    """A predictor for a model in memory (e.g. a zoo model with --pretrained)."""
    from mvkit.models import architecture_of, labels_of, preprocess_of

    artifact = Artifact(path=architecture_of(model), format="pytorch", model_name=architecture_of(model),
                        labels=labels_of(model), preprocess=preprocess_of(model))
    return TorchPredictor(artifact, model)


def torchscript_predictor(artifact: Artifact) -> TorchPredictor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the format is for old apps
        return TorchPredictor(artifact, torch.jit.load(str(artifact.path), map_location="cpu"))
