"""mvkit checkpoints: safetensors weights plus the Artifact sidecar (model name, labels, Preprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_model as load_safetensors_into
from safetensors.torch import save_model as save_safetensors
from torch import nn

from mvkit.artifact import Artifact, sidecar_path
from mvkit.errors import MvkitError
from mvkit.files import atomic_output
from mvkit.models.zoo import architecture_of, create_model, labels_of, preprocess_of


def save_checkpoint(model: nn.Module, path: Path | str, metrics: dict[str, Any] | None = None,
                    source: str | None = None, extra: dict[str, Any] | None = None) -> Artifact:
    """Write weights atomically (temp file + rename) and then the sidecar."""
    path = Path(path)
    with atomic_output(path) as partial:
        save_safetensors(model, str(partial), metadata={"architecture": architecture_of(model)})
    artifact = Artifact(path=path, format="safetensors", model_name=architecture_of(model),
                        labels=labels_of(model), preprocess=preprocess_of(model), source=source,
                        metrics=metrics or {}, extra=extra or {})
    artifact.save()
    return artifact


def load_checkpoint(path: Path | str) -> nn.Module:
    """A model saved by save_checkpoint, with its labels and Preprocess, in eval mode."""
    artifact = Artifact.load(Path(path))
    if artifact.format != "safetensors":
        raise MvkitError(f"{path} is a {artifact.format} artifact, not a checkpoint; use its runtime instead")
    model = create_model(artifact.model_name, labels=artifact.labels, preprocess=artifact.preprocess)
    missing, unexpected = load_safetensors_into(model, str(path), strict=False)
    if missing or unexpected:
        raise MvkitError(f"{path} does not match {artifact.model_name}: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    return model.eval()


def load_model(spec: str | Path, pretrained: bool = False, weights: Path | str | None = None,
               num_classes: int | None = None) -> nn.Module:
    """MODEL as the CLI takes it: an mvkit checkpoint file, or a zoo/timm name (+ --pretrained/--weights)."""
    path = Path(spec)
    if path.exists() and sidecar_path(path).exists():
        return load_checkpoint(path)
    if path.exists() and path.is_file():
        raise MvkitError(f"{path} is a file but has no mvkit sidecar; to load raw weights use a model name "
                         f"with --weights {path}")
    return create_model(str(spec), num_classes=num_classes, pretrained=pretrained, weights=weights)
