"""Accuracy of a model on a labelled dataset: top-1, top-5, per class, and a confusion matrix."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mvkit.data.datasets import with_likely_name, with_transform
from mvkit.errors import MvkitError
from mvkit.inference import predict_probabilities
from mvkit.models.zoo import labels_of, preprocess_of
from mvkit.runtime.base import Predictor


@dataclass
class EvalResult:
    top1: float
    top5: float
    count: int
    per_class: dict[str, float]  # accuracy of each dataset class
    classes: list[str]  # dataset classes: rows of the confusion matrix
    confusion: np.ndarray  # [true class, predicted class]; an extra last column counts "other" predictions

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "count": self.count, "per_class": self.per_class,
                "classes": self.classes, "confusion": self.confusion.tolist()}


def match_classes(dataset_classes: list[str], model_labels: list[str]) -> list[int]:
    """The model's output index of each dataset class, matched by name; a class the model does not know is refused,
    naming the label it was likely meant to be (a folder `roses` for the label `rose`)."""
    position = {label: i for i, label in enumerate(model_labels)}
    unknown = [c for c in dataset_classes if c not in position]
    if unknown:
        named = [with_likely_name(name, model_labels, "the model") for name in unknown[:5]]
        raise MvkitError(
            f"the model does not know the dataset class(es) {', '.join(named)}{' ...' if len(unknown) > 5 else ''}; "
            f"its labels are {model_labels[:5]}{'...' if len(model_labels) > 5 else ''}. Rename the folders, or "
            "evaluate a model trained on this data."
        )
    return [position[c] for c in dataset_classes]


def evaluate(
    model: nn.Module | Predictor | str | Path,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Evaluate a model in memory with its own eval transform (`num_workers` DataLoader processes), or an exported
    artifact's Predictor in its own runtime (or its path, or a checkpoint's); dataset classes are matched to model
    labels by name."""
    if isinstance(model, (str, Path)):
        from mvkit.predict import as_predictor

        model = as_predictor(model)
    in_memory = isinstance(model, nn.Module)
    model_labels = labels_of(model) if in_memory else model.labels
    to_model = torch.tensor(match_classes(dataset.classes, model_labels))  # checked before the work
    if in_memory:
        dataset_in = with_transform(dataset, preprocess_of(model).eval_transform())  # the caller's is not changed
        probabilities, targets = predict_probabilities(model, dataset_in, batch_size, num_workers, on_progress)
    else:
        scores, labels = model.predict_dataset(dataset, batch_size, on_progress)
        probabilities, targets = torch.from_numpy(scores), torch.from_numpy(labels)
    true_model_index = to_model[targets]
    k = min(5, len(model_labels))
    topk = probabilities.topk(k, dim=-1).indices
    predicted = topk[:, 0]
    top1 = float((predicted == true_model_index).float().mean())
    top5 = float((topk == true_model_index[:, None]).any(dim=-1).float().mean())

    n = len(dataset.classes)
    from_model = {int(m): d for d, m in enumerate(to_model.tolist())}
    has_other = len(model_labels) > n
    confusion = np.zeros((n, n + int(has_other)), dtype=np.int64)
    for true, pred in zip(targets.tolist(), predicted.tolist()):
        confusion[true, from_model.get(pred, n)] += 1
    per_class = {
        name: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else float("nan")
        for i, name in enumerate(dataset.classes)
    }
    return EvalResult(top1=top1, top5=top5, count=len(targets), per_class=per_class,
                      classes=list(dataset.classes), confusion=confusion)


def few_photos_note(count: int, enough: int = 100) -> str | None:
    """Below `enough` photos one photo moves a top-1 by over a point: what a reader of the number should know."""
    if count >= enough:
        return None
    return f"only {count} photos: one photo moves a top-1 by {100 / max(count, 1):.1f} points"


def plot_confusion(result: EvalResult, path: Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix as a PNG; counts written in the cells for up to 20 classes."""
    fig = confusion_figure(result, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def confusion_figure(result: EvalResult, title: str):
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend is left alone

    n_rows, n_cols = result.confusion.shape
    columns = result.classes + (["(other)"] if n_cols > n_rows else [])
    totals = result.confusion.sum(axis=1, keepdims=True).clip(min=1)
    side = max(4.0, 0.5 * n_cols + 2)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    image = ax.imshow(result.confusion / totals, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n_cols), columns, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), result.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # wrapped to the figure's width (about 9 characters an inch at the title's size): a long title was cut off
    wrapped = textwrap.fill(title, width=int((side + 1) * 9))
    ax.set_title(f"{wrapped}\ntop-1 {result.top1:.1%} on {result.count} images")
    if n_cols <= 20:
        for i in range(n_rows):
            for j in range(n_cols):
                if result.confusion[i, j]:
                    dark = result.confusion[i, j] / totals[i, 0] > 0.5
                    ax.text(j, i, str(result.confusion[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
