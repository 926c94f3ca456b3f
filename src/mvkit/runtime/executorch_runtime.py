"""ExecuTorch predictor: runs a .pte with the Python bindings of ExecuTorch's runtime (the XNNPACK kernels a
phone runs). Programs are exported for batch 1, so a batch is run one photo at a time."""

from __future__ import annotations

import functools

import numpy as np
import torch

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor, softmax, usable_cores


@functools.cache
def fit_thread_pool() -> int:
    """XNNPACK's thread pool sized to the cores this process may use (its affinity mask); returns its size.
    ExecuTorch sizes it by the machine's cores, so a process confined to one core (taskset, a cpuset) ran two
    threads on it: 1.4-1.6x slower than one (Lite0 at 96 px, batch 4, a scratch script pinned to one core). Once per
    process, before the first program loads: resetting the pool repeatedly crashed here."""
    from executorch.extension.pybindings import portable_lib

    cores = usable_cores()
    if portable_lib._threadpool_get_thread_count() != cores:
        portable_lib._unsafe_reset_threadpool(cores)
    return portable_lib._threadpool_get_thread_count()


class ExecutorchPredictor(Predictor):
    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        from mvkit.quiet import native_output_to_log

        # its import logs a torch warning, and its first program load prints cpuinfo lines from C++
        with native_output_to_log("executorch"):
            from executorch.runtime import Runtime  # installed: the format table checks it first

            self._threads = fit_thread_pool()
            self.program = Runtime.get().load_program(str(artifact.path))
            self.method = self.program.load_method("forward")

    @property
    def threads(self) -> int:
        return self._threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        logits = [self.method.execute([torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32))])[0].numpy()
                  for image in batch]
        return softmax(np.concatenate(logits).astype(np.float64)).astype(np.float32)
