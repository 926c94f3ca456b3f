"""Top-k predictions for photos or folders of photos, through any Predictor (checkpoint, ONNX, TorchScript)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mvkit.artifact import refuse_missing_file
from mvkit.data.images import is_image_file, is_url, list_files, read_photo
from mvkit.errors import MvkitError
from mvkit.runtime import Predictor, is_artifact, load_predictor

if TYPE_CHECKING:
    from torch import nn


def top_k(probabilities, labels: list[str], k: int) -> list[tuple[str, float]]:
    """The k most likely (label, probability), most likely first, rounded to the 6 decimals mvkit prints."""
    return [(labels[i], round(float(probabilities[i]), 6)) for i in probabilities.argsort()[::-1][:k]]


@dataclass
class Prediction:
    path: Path | str  # a str for a URL
    top: list[tuple[str, float]]  # (label, probability), most likely first

    def to_dict(self) -> dict:
        return {"path": str(self.path), "top": [{"label": label, "probability": p} for label, p in self.top]}


def collect_inputs(inputs: list[Path | str], problems: list[tuple[Path, str]] | None = None) -> list[Path | str]:
    """Photos named directly (files, or http(s) URLs kept as strings), plus every image file below named folders
    (what cannot be listed goes to `problems`)."""
    files: list[Path | str] = []
    for item in inputs:
        if is_url(item):
            files.append(item)
            continue
        item = Path(item)
        if item.is_dir():
            files += [p for p in list_files(item, problems) if is_image_file(p)]
        elif item.exists():
            files.append(item)
        else:
            raise MvkitError(f"{item} does not exist")
    if not files:
        raise MvkitError(f"no photos found in {', '.join(map(str, inputs))}")
    return files


def as_predictor(model: nn.Module | Predictor | str | Path, pretrained: bool = False,
                 weights: Path | None = None) -> Predictor:
    """MODEL as the CLI takes it (artifact file, checkpoint, or zoo name + weights), or a model in memory."""
    if isinstance(model, Predictor):
        return model
    if isinstance(model, (str, Path)):
        refuse_missing_file(model)
        if is_artifact(model):  # an exported file's runtime needs no torch
            return load_predictor(model)
    from mvkit.runtime.torch_runtime import model_predictor

    if isinstance(model, (str, Path)):  # a checkpoint, or a model name with weights
        from mvkit.models import load_model

        model = load_model(model, pretrained=pretrained, weights=weights, require_weights=True)
    return model_predictor(model)


def predict_files(
    model: nn.Module | Predictor | str | Path,
    inputs: list[Path | str] | Path | str,
    topk: int = 5,
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predictions for every readable photo, and the (path, reason) of every file skipped. Each photo is decoded
    once, as its batch comes: a phone's photo can take a second to decode. on_start(files) once they are listed,
    on_progress(n) after each batch."""
    predictor = as_predictor(model)
    skipped: list[tuple[Path, str]] = []
    # one path given as it is: a string iterated would be its characters, the first of them "/", the whole disk
    files = collect_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs, skipped)
    if on_start:
        on_start(len(files))
    k = min(topk, len(predictor.labels))
    predictions = []
    for start in range(0, len(files), batch_size):
        paths, images = [], []
        for path in files[start:start + batch_size]:
            image, problem = read_photo(path)
            if image is None:
                skipped.append((path, problem))
            else:
                paths.append(path)
                images.append(image)
        if images:
            probabilities = predictor.predict_images(images)
            predictions += [Prediction(path, top_k(row, predictor.labels, k)) for path, row in zip(paths, probabilities)]
        if on_progress:
            on_progress(len(files[start:start + batch_size]))  # every file handled, read or skipped
    return predictions, skipped
