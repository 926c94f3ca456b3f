"""Core ML predictor: real Core ML through coremltools, which only runs on macOS. Photos are fed as the
Vision framework feeds them: resized and center-cropped RGB images; the package applies its own scale/bias."""

from __future__ import annotations

import platform

import numpy as np
from PIL import Image

from mvkit.artifact import Artifact
from mvkit.errors import MvkitError
from mvkit.runtime.base import Predictor


class CoreMLPredictor(Predictor):
    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        if platform.system() != "Darwin":
            raise MvkitError(
                f"{artifact.path}: Core ML runs only on macOS. On this machine `mvkit verify` checks the package's "
                "structure (image input, sizes, labels, weight dtypes); its numbers need a Mac.")
        import coremltools as ct

        self.model = ct.models.MLModel(str(artifact.path))
        mean = np.asarray(artifact.preprocess.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(artifact.preprocess.std, dtype=np.float32).reshape(3, 1, 1)
        self._unnormalise = lambda chw: np.clip(np.rint((chw * std + mean) * 255.0), 0, 255).astype(np.uint8)

    def run(self, batch: np.ndarray) -> np.ndarray:
        rows = []
        for chw in batch:
            image = Image.fromarray(self._unnormalise(chw).transpose(1, 2, 0), mode="RGB")
            scores = self.model.predict({"image": image})["classLabel_probs"]
            rows.append([scores[label] for label in self.labels])
        return np.asarray(rows, dtype=np.float32)
