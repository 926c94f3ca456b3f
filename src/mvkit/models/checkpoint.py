"""mvkit checkpoints: safetensors weights plus the Artifact sidecar (model name, labels, Preprocess). The file's
header also carries mvkit's record (mvkit.metadata), so a checkpoint copied without its sidecar still loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_model as load_safetensors_into
from safetensors.torch import save_model as save_safetensors
from torch import nn

from mvkit.artifact import Artifact, refuse_missing_file, sidecar_path
from mvkit.errors import MvkitError
from mvkit.files import atomic_output
from mvkit.models.zoo import architecture_of, create_model, labels_of, preprocess_of, resolve_name


def save_checkpoint(model: nn.Module, path: Path | str, metrics: dict[str, Any] | None = None,
                    source: str | None = None, extra: dict[str, Any] | None = None) -> Artifact:
    """Write weights atomically (temp file + rename), with mvkit's record in the safetensors header, then the
    sidecar."""
    from mvkit.metadata import record_of

    path = Path(path)
    artifact = Artifact(path=path, format="safetensors", model_name=architecture_of(model),
                        labels=labels_of(model), preprocess=preprocess_of(model), source=source,
                        metrics=metrics or {}, extra=extra or {})
    with atomic_output(path) as partial:
        save_safetensors(model, str(partial), metadata=record_of(artifact))
    artifact.save()
    return artifact


def inspect_safetensors(path: Path):
    """The format table's reader: the mvkit record in the header (none in raw weights or older checkpoints)."""
    from safetensors import safe_open

    from mvkit.metadata import FileFacts

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return FileFacts(header if "mvkit_schema" in header else {})


def describes_itself(path: Path) -> bool:
    """An mvkit checkpoint without its sidecar: its header holds the record."""
    from mvkit.metadata import load_from_file

    return path.suffix == ".safetensors" and load_from_file(path) is not None


def load_checkpoint(path: Path | str) -> nn.Module:
    """A model saved by save_checkpoint, with its labels and Preprocess, in eval mode."""
    artifact = Artifact.load(Path(path))
    if artifact.format != "safetensors":
        raise MvkitError(f"{path} is a {artifact.format} artifact, not a checkpoint; use its runtime instead")
    model = create_model(artifact.model_name, labels=artifact.labels, preprocess=artifact.preprocess)
    try:
        missing, unexpected = load_safetensors_into(model, str(path), strict=False)
    except RuntimeError as exc:  # a tensor of another shape: the sidecar's labels or model do not fit the weights
        detail = str(exc).strip().splitlines()[-1][:300]
        raise MvkitError(f"{path} does not fit its sidecar ({artifact.model_name}, {len(artifact.labels)} labels): "
                         f"{detail}") from None
    except Exception as exc:  # safetensors' own errors: truncated or not a safetensors file
        raise MvkitError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}); it is "
                         "damaged or truncated: use another checkpoint (last.safetensors) or train again") from None
    if missing or unexpected:
        raise MvkitError(f"{path} does not match {artifact.model_name}: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    return model.eval()


def load_model(spec: str | Path, pretrained: bool = False, weights: Path | str | None = None,
               num_classes: int | None = None, require_weights: bool = False) -> nn.Module:
    """MODEL as the CLI takes it: an mvkit checkpoint file, or a zoo/timm name (+ --pretrained/--weights).
    require_weights: refuse a model name without weights (its random answers would look like real ones)."""
    path = Path(spec)
    if path.exists() and (sidecar_path(path).exists() or describes_itself(path)):
        return load_checkpoint(path)
    if path.exists() and path.is_file():
        raise MvkitError(f"{path} is a file but has no mvkit sidecar; to load raw weights use a model name "
                         f"with --weights {path}")
    refuse_missing_file(path)
    resolve_name(str(spec))  # an unknown name fails first, with suggestions
    if require_weights and not pretrained and weights is None:
        raise MvkitError(f"{spec} without --pretrained or --weights has random weights, so its answers would mean "
                         "nothing: add --pretrained (or --weights FILE)")
    return create_model(str(spec), num_classes=num_classes, pretrained=pretrained, weights=weights)
