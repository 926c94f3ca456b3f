"""Calibration photos for static quantization: real training photos spread over all classes."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from mvkit.data.datasets import load_data, take_evenly
from mvkit.errors import MvkitError


def calibration_batches(prepare: Callable[[list[Image.Image]], np.ndarray], data: str, count: int,
                        batch_size: int = 16) -> list[np.ndarray]:
    """`count` training photos spread over all classes, prepared by `prepare` (a Predictor's own prepare, so
    calibration sees exactly the inputs the runtime will see)."""
    try:
        splits = load_data(data)
    except MvkitError as exc:
        raise MvkitError(f"calibration data: {exc}") from exc
    dataset = take_evenly(splits.train, count)
    dataset.transform = None
    batches = []
    for start in range(0, len(dataset), batch_size):
        images = [dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))]
        batches.append(prepare(images).astype(np.float32))
    return batches
