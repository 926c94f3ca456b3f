"""One Predictor interface for every artifact kind: photos in, class probabilities out.

Each runtime gets the photos prepared by the artifact's own Preprocess, so a checkpoint, an ONNX file and a
TorchScript file answer for the same pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from mvkit.artifact import Artifact
from mvkit.errors import MvkitError


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, a container's cpuset), which
    os.cpu_count() ignores. Runtimes get this many threads, so a process confined to fewer cores does not run more
    threads than cores (their spin-waits then slow each other down several times over)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Predictor:
    """Base class: subclasses implement run(batch) for a normalised float32 NCHW batch -> probabilities."""

    def __init__(self, artifact: Artifact):
        self.artifact = artifact
        self.labels = artifact.labels
        self.preprocess = artifact.preprocess

    @property
    def name(self) -> str:
        return f"{self.artifact.format} ({Path(self.artifact.path).name})"

    @property
    def runtime(self) -> str:
        """What runs it, for tables (the format row's runtime); Core ML and OpenVINO say more: the numpy interpreter
        off macOS, the precision the plugin chose."""
        from mvkit.formats import FORMATS

        row = FORMATS.get(self.artifact.format)
        return row.runtime if row else self.artifact.format

    @property
    def threads(self) -> int:
        """Threads the runtime computes with (PyTorch's own setting; other runtimes override it)."""
        import torch

        return torch.get_num_threads()

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([self.preprocess.eval_array(image) for image in images])

    def predict_images(self, images: Image.Image | list[Image.Image]) -> np.ndarray:
        """Probabilities [N, classes] for N PIL photos (one photo: N = 1)."""
        images = [images] if isinstance(images, Image.Image) else list(images)
        for image in images:
            if not isinstance(image, Image.Image):
                # an array's colour order is not known: OpenCV's frames are BGR, PIL's and PyAV's RGB
                raise MvkitError(f"predict_images takes PIL images, not {type(image).__name__}: for an RGB uint8 array "
                                 "use PIL.Image.fromarray(array); an OpenCV frame is BGR, so "
                                 "Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))")
        return self.check_classes(self.run(self.prepare(images)))

    def check_classes(self, probabilities: np.ndarray) -> np.ndarray:
        """`probabilities` as they are, once their class count is known to match the labels."""
        if probabilities.shape[-1] != len(self.labels):
            raise MvkitError(f"{self.artifact.path} outputs {probabilities.shape[-1]} classes but its sidecar lists "
                             f"{len(self.labels)} labels: the sidecar belongs to another model; export it again")
        return probabilities

    def predict_dataset(self, dataset, batch_size: int = 32,
                        on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, classes], labels [N]) over a dataset of photos (its transform is not used)."""
        probabilities, labels = [], []
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            probabilities.append(self.predict_images([dataset.image(i) for i in indices]))
            labels.extend(dataset.target(i) for i in indices)
            if on_progress:
                on_progress(len(indices))
        return np.concatenate(probabilities), np.asarray(labels)
