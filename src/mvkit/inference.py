"""Batched forward passes of a PyTorch model over a dataset, with optional progress reporting."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax probabilities [N, classes], dataset labels [N]) in dataset order."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    probabilities, labels = [], []
    for images, targets in loader:
        probabilities.append(model(images).float().softmax(dim=-1))
        labels.append(torch.as_tensor(targets))
        if on_progress:
            on_progress(len(images))
    return torch.cat(probabilities), torch.cat(labels)
