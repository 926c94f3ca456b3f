"""Verify an exported artifact against the checkpoint it came from, on real photos, each in its own runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mvkit.artifact import Artifact
from mvkit.data.datasets import load_data, take_evenly
from mvkit.errors import MvkitError
from mvkit.evaluate import _dataset_to_model_index
from mvkit.predict import as_predictor
from mvkit.runtime import Predictor, load_predictor


@dataclass
class VerifyReport:
    artifact: str
    format: str
    reference: str
    count: int
    agreement: float  # share of photos where both give the same top-1 class
    max_abs_prob_diff: float
    mean_abs_prob_diff: float
    artifact_top1: float | None  # accuracy against the dataset labels, when the classes match
    reference_top1: float | None
    threshold: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def reference_predictor(artifact: Artifact) -> Predictor:
    """The model the artifact was exported from, in PyTorch."""
    if artifact.source is None:
        raise MvkitError(f"{artifact.path} does not record its source checkpoint; give one with --reference")
    return as_predictor(artifact.source, pretrained=bool(artifact.extra.get("source_pretrained")),
                        weights=artifact.extra.get("source_weights"))


def _accuracy(probabilities: np.ndarray, labels: np.ndarray, index: list[int] | None) -> float | None:
    if index is None:
        return None
    return float((probabilities.argmax(axis=1) == np.asarray(index)[labels]).mean())


def verify(artifact_path: Path | str, data: str, threshold: float = 0.99, limit: int | None = None,
           reference: str | Path | None = None, split: str = "val", batch_size: int = 32,
           on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    candidate = load_predictor(artifact_path)
    same_file = reference is not None and Path(reference).exists() and \
        Path(reference).resolve() == Path(artifact_path).resolve()
    if same_file:  # a checkpoint measured against itself: accuracy only, agreement 1 by definition
        baseline = candidate
    else:
        baseline = as_predictor(reference) if reference else reference_predictor(candidate.artifact)
    splits = load_data(data)
    dataset = splits.val if split == "val" else splits.train
    if limit:
        dataset = take_evenly(dataset, limit)
    try:
        index = _dataset_to_model_index(dataset.classes, candidate.labels)
    except MvkitError:
        index = None  # e.g. an ImageNet model on flower photos: agreement still means something
    ours, labels = candidate.predict_dataset(dataset, batch_size, on_progress)
    theirs = ours if baseline is candidate else baseline.predict_dataset(dataset, batch_size, on_progress)[0]
    difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    agreement = float((ours.argmax(axis=1) == theirs.argmax(axis=1)).mean())
    return VerifyReport(
        artifact=str(artifact_path), format=candidate.artifact.format, reference=str(reference or candidate.artifact.source),
        count=len(labels), agreement=agreement, max_abs_prob_diff=float(difference.max()),
        mean_abs_prob_diff=float(difference.mean()), artifact_top1=_accuracy(ours, labels, index),
        reference_top1=_accuracy(theirs, labels, index), threshold=threshold, passed=agreement >= threshold)
