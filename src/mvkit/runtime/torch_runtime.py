"""PyTorch predictors: an mvkit checkpoint (eager) or a TorchScript file."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor


class TorchPredictor(Predictor):
    """Eager models run channels-last (NHWC): oneDNN's convolutions are faster so on x86 CPUs
    (EfficientNet-Lite0 22.5 -> 15.5 ms at batch 1 in ../shared/notes/perf-anchors.md)."""

    def __init__(self, artifact: Artifact, model: nn.Module, channels_last: bool = True):
        super().__init__(artifact)
        self.channels_last = channels_last
        self.model = model.eval().to(memory_format=torch.channels_last) if channels_last else model.eval()

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        from mvkit.models.zoo import fit_input_size

        fit_input_size(self.model, batch.shape[-1])  # a ViT asked for another side (live's size by device)
        inputs = torch.from_numpy(batch)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.model(inputs).float().softmax(dim=-1).numpy()


def checkpoint_predictor(artifact: Artifact) -> TorchPredictor:
    from mvkit.models import load_checkpoint

    return TorchPredictor(artifact, load_checkpoint(artifact.path))


def model_predictor(model: nn.Module) -> TorchPredictor:
    """A predictor for a model in memory (e.g. a zoo model with --pretrained). Contiguous (NCHW): converting
    it to channels-last would change the caller's model, whose later exports need the default layout."""
    from mvkit.models import architecture_of, labels_of, preprocess_of

    artifact = Artifact(path=architecture_of(model), format="pytorch", model_name=architecture_of(model),
                        labels=labels_of(model), preprocess=preprocess_of(model))
    return TorchPredictor(artifact, model, channels_last=False)


def torchscript_predictor(artifact: Artifact) -> TorchPredictor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the format is for old apps
        return TorchPredictor(artifact, torch.jit.load(str(artifact.path), map_location="cpu"), channels_last=False)
