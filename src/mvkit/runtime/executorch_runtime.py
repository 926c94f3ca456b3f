"""ExecuTorch predictor: runs a .pte with the Python bindings of ExecuTorch's runtime (the XNNPACK kernels a
phone runs). Programs are exported for batch 1, so a batch is run one photo at a time."""

from __future__ import annotations

import os

import numpy as np
import torch

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor, softmax


class ExecutorchPredictor(Predictor):
    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        from executorch.runtime import Runtime  # installed: the format table checks it first
        # One Runtime per process: its thread pool (one thread per core) is created once; resetting it
        # repeatedly crashed here.
        self.program = Runtime.get().load_program(str(artifact.path))
        self.method = self.program.load_method("forward")

    @property
    def threads(self) -> int:
        return os.cpu_count() or 1  # XNNPACK's thread pool: one thread per core

    def run(self, batch: np.ndarray) -> np.ndarray:
        logits = [self.method.execute([torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32))])[0].numpy()
                  for image in batch]
        return softmax(np.concatenate(logits).astype(np.float64)).astype(np.float32)
