"""One Predictor interface for every artifact kind: photos in, class probabilities out.

Each runtime gets the photos prepared by the artifact's own Preprocess, so a checkpoint, an ONNX file and a
TorchScript file answer for the same pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from mvkit.artifact import Artifact


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Predictor:
    """Base class: subclasses implement run(batch) for a normalised float32 NCHW batch -> probabilities."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self.labels = artifact.labels
        self.transform = artifact.preprocess.eval_transform()

    @property
    def name(self) -> str:
        return f"{self.artifact.format} ({Path(self.artifact.path).name})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        return torch.stack([self.transform(image) for image in images]).numpy()

    def predict_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.run(self.prepare(images))

    def predict_dataset(self, dataset, batch_size: int = 32,
                        on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, classes], labels [N]) over a dataset whose items are (PIL image, label)."""
        saved_transform, dataset.transform = dataset.transform, None
        probabilities, labels = [], []
        try:
            for start in range(0, len(dataset), batch_size):
                items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                probabilities.append(self.predict_images([image for image, _ in items]))
                labels.extend(label for _, label in items)
                if on_progress:
                    on_progress(len(items))
        finally:
            dataset.transform = saved_transform
        return np.concatenate(probabilities), np.asarray(labels)
