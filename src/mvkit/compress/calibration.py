"""Calibration photos for static quantization: real training photos spread over all classes."""

from __future__ import annotations

import logging

import numpy as np

from mvkit.data.datasets import load_data_as_trained, take_evenly
from mvkit.errors import MvkitError
from mvkit.runtime.base import Predictor


def calibration_batches(predictor: Predictor, data: str, count: int, batch_size: int = 16) -> list[np.ndarray]:
    """`count` training photos spread over all classes (split as the model was trained, so no val photo is used),
    prepared by the predictor's own prepare, so calibration sees exactly the inputs the runtime will see."""
    try:
        splits = load_data_as_trained(data, predictor.artifact)
    except MvkitError as exc:
        raise MvkitError(f"calibration data: {exc}") from exc
    dataset = take_evenly(splits.train, count)
    if len(dataset) < count:
        logging.getLogger(__name__).warning(
            "calibration: %d training photos in %s, fewer than the %d asked; int8 ranges from so few "
            "photos may clip real inputs: check the int8 file with mvkit verify", len(dataset), data, count)
    batches = []
    for start in range(0, len(dataset), batch_size):
        images = [dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))]
        batches.append(predictor.prepare(images).astype(np.float32))
    return batches
