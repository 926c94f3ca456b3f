"""LiteRT predictor: the .tflite file in LiteRT's interpreter (XNNPACK on CPU), one photo at a time (batch 1)."""

from __future__ import annotations

import numpy as np

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor, softmax, usable_cores


class LiteRTPredictor(Predictor):
    def __init__(self, artifact: Artifact, threads: int | None = None):
        super().__init__(artifact)
        from ai_edge_litert.interpreter import Interpreter  # installed: the format table checks it first
        self._threads = threads or usable_cores()
        self.interpreter = Interpreter(model_path=str(artifact.path), num_threads=self._threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    @property
    def threads(self) -> int:
        return self._threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        logits = []
        for image in batch:
            self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(image[None], dtype=np.float32))
            self.interpreter.invoke()
            logits.append(self.interpreter.get_tensor(self.output_index).copy())
        return softmax(np.concatenate(logits).astype(np.float64)).astype(np.float32)
