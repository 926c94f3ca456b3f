"""Linear probe: fit only the classifier head on features of the frozen, pretrained body.

The body runs once per image (features cached), so this takes seconds where full training takes hours; it
is the quickest honest way to turn an ImageNet backbone into a classifier for new classes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mvkit.data.datasets import with_transform
from mvkit.errors import MvkitError
from mvkit.models.zoo import preprocess_of


@torch.inference_mode()
def extract_features(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64,
                     on_progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-logit features (what the classifier sees) and labels, using the model's eval transform."""
    dataset = with_transform(dataset, preprocess_of(model).eval_transform())  # the caller's is not changed
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    features, labels = [], []
    model.eval()
    for images, targets in loader:
        features.append(model.forward_head(model.forward_features(images), pre_logits=True))
        labels.append(torch.as_tensor(targets))
        if on_progress:
            on_progress(len(images))
    return torch.cat(features), torch.cat(labels)


def fit_linear_head(model: nn.Module, dataset: torch.utils.data.Dataset, epochs: int = 60,
                    lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
                    on_progress: Callable[[int], None] | None = None) -> nn.Module:
    """Train model's classifier (an nn.Linear) on cached features with AdamW; the body is untouched."""
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise MvkitError(f"a linear probe (head-only fit) needs an nn.Linear classifier; "
                         f"{type(model).__name__} has a {type(head).__name__}: train it with --preset head-only")
    features, labels = extract_features(model, dataset, on_progress=on_progress)
    generator = torch.Generator().manual_seed(seed)
    # Standardise features for a well-conditioned problem, then fold the scaling back into the head.
    # The floor on std keeps rarely-active features from getting huge folded weights, which would make the
    # head fragile (and useless after int8 quantization).
    mean, std = features.mean(0), features.std(0)
    std = std.clamp(min=0.1 * float(std.mean()) + 1e-6)
    scaled = (features - mean) / std
    probe = nn.Linear(features.shape[1], head.out_features)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(256):
            optimizer.zero_grad()
            nn.functional.cross_entropy(probe(scaled[batch]), labels[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        head.weight.copy_(probe.weight / std)
        head.bias.copy_(probe.bias - (probe.weight * (mean / std)).sum(dim=1))
    return model.eval()
