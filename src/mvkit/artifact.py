"""Artifact: a saved model file plus a small JSON sidecar that every later stage reads.

The sidecar (`<file>.mvkit.json`, beside the file) records the format, the model name, the Preprocess,
the class labels, where the file came from and what was measured on it, so no stage asks the user to
repeat flags.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvkit.errors import MvkitError
from mvkit.preprocess import Preprocess

SIDECAR_SUFFIX = ".mvkit.json"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Artifact:
    path: Path
    format: str  # "safetensors" for checkpoints; later "onnx", "coreml", "executorch", ...
    model_name: str  # timm architecture name
    labels: list[str]
    preprocess: Preprocess
    source: str | None = None  # the checkpoint this artifact was made from
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model_name": self.model_name,
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "preprocess": self.preprocess.to_dict(),
            "source": self.source,
            "metrics": self.metrics,
            "extra": self.extra,
        }

    def save(self) -> Path:
        target = sidecar_path(self.path)
        write_atomically(target, json.dumps(self.to_dict(), indent=2).encode())
        return target

    @classmethod
    def load(cls, path: Path) -> "Artifact":
        path = Path(path)
        side = sidecar_path(path)
        if not side.exists():
            raise MvkitError(
                f"{path} has no sidecar {side.name}: mvkit cannot tell which model, labels and preprocessing "
                "it holds. Pass a model name with --weights instead, or re-save it with mvkit."
            )
        try:
            data = json.loads(side.read_text())
            return cls(
                path=path,
                format=data["format"],
                model_name=data["model_name"],
                labels=list(data["labels"]),
                preprocess=Preprocess.from_dict(data["preprocess"]),
                source=data.get("source"),
                metrics=data.get("metrics", {}),
                extra=data.get("extra", {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise MvkitError(f"sidecar {side} is damaged ({exc}); re-create the artifact") from exc
