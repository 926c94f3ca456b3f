"""Top-k predictions for photos or folders of photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from mvkit.data.datasets import ImageFileDataset
from mvkit.data.images import is_image_file, list_files, scan_images
from mvkit.errors import MvkitError
from mvkit.inference import predict_probabilities
from mvkit.models.zoo import labels_of, preprocess_of


@dataclass
class Prediction:
    path: Path
    top: list[tuple[str, float]]  # (label, probability), most likely first

    def to_dict(self) -> dict:
        return {"path": str(self.path), "top": [{"label": label, "probability": p} for label, p in self.top]}


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Photos named directly, plus every image file below named folders."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files += [p for p in list_files(item) if is_image_file(p)]
        elif item.exists():
            files.append(item)
        else:
            raise MvkitError(f"{item} does not exist")
    if not files:
        raise MvkitError(f"no photos found in {', '.join(map(str, inputs))}")
    return files


def predict_files(
    model: nn.Module,
    inputs: list[Path],
    topk: int = 5,
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predictions for every readable photo, and the (path, reason) of every file skipped."""
    report = scan_images(collect_inputs(inputs))
    labels = labels_of(model)
    if not report.good:
        return [], report.bad
    dataset = ImageFileDataset([(p, -1) for p in report.good], labels, preprocess_of(model).eval_transform())
    probabilities, _ = predict_probabilities(model, dataset, batch_size=batch_size, on_progress=on_progress)
    values, indices = probabilities.topk(min(topk, len(labels)), dim=-1)
    predictions = [
        Prediction(path, [(labels[i], round(float(v), 6)) for v, i in zip(row_values, row_indices)])
        for path, row_values, row_indices in zip(report.good, values.tolist(), indices.tolist())
    ]
    return predictions, report.bad
