"""Core ML predictor. On macOS: real Core ML through coremltools, fed the way Vision feeds it (resized,
center-cropped RGB pixels; the package applies its own scale/bias). Elsewhere: mvkit's numpy interpreter of
the ML program (mvkit.coreml.interpreter), fed the same pixels as float values. `interpreter=True` forces the
interpreter on macOS too, fed the same 8-bit pixels as Core ML, to cross-check the two."""

from __future__ import annotations

import dataclasses
import platform

import numpy as np
from PIL import Image

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor, usable_cores


class CoreMLPredictor(Predictor):
    def __init__(self, artifact: Artifact, interpreter: bool = False):
        default = int(artifact.extra.get("default_size", artifact.preprocess.size))
        if default != artifact.preprocess.size:  # the package only takes its enumerated sizes (caller's copy kept)
            artifact = dataclasses.replace(artifact, preprocess=artifact.preprocess.with_changes(size=default))
        super().__init__(artifact)
        self.mean = np.asarray(artifact.preprocess.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(artifact.preprocess.std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.on_macos = platform.system() == "Darwin"
        self.uses_core_ml = self.on_macos and not interpreter
        self.eight_bit_pixels = self.on_macos  # what Core ML is fed there; the interpreter then gets the same
        if self.uses_core_ml:
            import coremltools as ct

            self.model = ct.models.MLModel(str(artifact.path))
        else:
            from mvkit.coreml.interpreter import Program

            self.program = Program(artifact.path)

    @property
    def threads(self) -> int:
        return usable_cores()  # Core ML schedules itself; numpy's BLAS uses every core it may

    @property
    def runtime(self) -> str:
        return "Core ML" if self.uses_core_ml else "mvkit numpy MIL interpreter"

    def run(self, batch: np.ndarray) -> np.ndarray:
        pixels = (batch * self.std + self.mean) * 255.0  # undo the normalisation: the package does it itself
        if self.eight_bit_pixels:
            pixels = np.clip(np.rint(pixels), 0, 255)
        if not self.uses_core_ml:
            return self.program.probabilities(pixels)
        rows = []
        for chw in pixels.astype(np.uint8):
            scores = self.model.predict({"image": Image.fromarray(chw.transpose(1, 2, 0), mode="RGB")})["classLabel_probs"]
            rows.append([scores[label] for label in self.labels])
        return np.asarray(rows, dtype=np.float32)
