"""Artifact: a saved model file plus a small JSON sidecar that every later stage reads.

The sidecar (`<file>.mvkit.json`, beside the file) records the format, the model name, the Preprocess,
the class labels, where the file came from and what was measured on it, so no stage asks the user to
repeat flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvkit.errors import MvkitError
from mvkit.files import write_atomically
from mvkit.preprocess import Preprocess

SIDECAR_SUFFIX = ".mvkit.json"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


CHECKPOINT_SUFFIX = ".safetensors"


def source_as_loaded(stored: str | None, path: Path) -> str | None:
    """A stored source as a usable path: a file is stored relative to the artifact's folder (so a run folder can
    be moved or used from anywhere), and read from there, never from the current folder, where another run's
    best.safetensors may lie. A checkpoint that is no longer there keeps that path, so the error names it. A
    model name stays as it is."""
    if stored is None or Path(stored).is_absolute():
        return stored
    beside = Path(path).parent / stored
    if not (beside.exists() or stored.endswith(CHECKPOINT_SUFFIX)):
        return stored  # a model name
    found = beside.resolve()  # not "runs/x/../../y": relative to here when below it, else absolute
    return str(found.relative_to(Path.cwd())) if found.is_relative_to(Path.cwd()) else str(found)


def refuse_missing_file(spec: str | Path) -> None:
    """A MODEL argument that names a model file (by its suffix) that is not there is refused at once, before torch
    is imported to look it up as a zoo name. A zoo name has no such suffix (timm's tags: "vit_small.augreg_in1k")."""
    from mvkit.formats import FORMATS

    name = str(spec).rstrip("/")
    suffixes = (*(row.suffix for row in FORMATS.values()), ".pt", ".pth", ".bin", ".xml")
    if name.endswith(suffixes) and not Path(name).exists():
        raise MvkitError(f"{spec} does not exist")


@dataclass
class Artifact:
    path: Path
    format: str  # "safetensors" for checkpoints; later "onnx", "coreml", "executorch", ...
    model_name: str  # timm architecture name
    labels: list[str]
    preprocess: Preprocess
    # the checkpoint this artifact was made from: a usable path (load resolves the stored one, which is relative
    # to the sidecar's folder: source_as_loaded), or a model name
    source: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def inherited_extra(self) -> dict[str, Any]:
        """What an artifact made from this one keeps of its record: the split its checkpoint was trained on."""
        return {"split": self.extra["split"]} if self.extra.get("split") else {}

    def _stored_source(self) -> str | None:
        """A file source is stored relative to the sidecar's folder; a model name as it is."""
        if self.source is None or not Path(self.source).exists():
            return self.source
        return os.path.relpath(Path(self.source).resolve(), Path(self.path).resolve().parent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model_name": self.model_name,
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "preprocess": self.preprocess.to_dict(),
            "source": self._stored_source(),
            "metrics": self.metrics,
            "extra": self.extra,
        }

    def save(self) -> Path:
        target = sidecar_path(self.path)
        write_atomically(target, json.dumps(self.to_dict(), indent=2).encode())
        return target

    @classmethod
    def load(cls, path: Path, hint: str | None = None) -> "Artifact":
        """The artifact at `path` from its sidecar; `hint` says what the caller needed, when it is missing."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.exists():
            raise MvkitError(f"{path} does not exist")
        if not side.exists():
            from mvkit.metadata import load_from_file  # the file may describe itself (every mvkit export does)

            described = load_from_file(path)
            if described is not None:
                return described
            raise MvkitError(
                f"{path} has no sidecar {side.name} and carries no mvkit metadata: mvkit cannot tell which "
                "model, labels and preprocessing it holds. " + (hint + "; " if hint else "")
                + "export it with `mvkit export` (for raw weights: a model name with --weights).")
        try:
            data = json.loads(side.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            labels = data["labels"]
            if not isinstance(labels, list) or not labels or not all(isinstance(l, str) and l for l in labels):
                raise ValueError("labels must be a non-empty list of non-empty strings")
            if len(set(labels)) != len(labels):
                raise ValueError("labels must be unique")
            if not isinstance(data.get("extra", {}), dict) or not isinstance(data.get("metrics", {}), dict):
                raise ValueError("extra and metrics must be objects")
            return cls(
                path=path,
                format=data["format"],
                model_name=data["model_name"],
                labels=list(data["labels"]),
                preprocess=Preprocess.from_dict(data["preprocess"]),
                source=source_as_loaded(data.get("source"), path),
                metrics=data.get("metrics", {}),
                extra=data.get("extra", {}),
            )
        except (KeyError, ValueError, TypeError, MvkitError) as exc:
            problem = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise MvkitError(f"sidecar {side} is damaged ({problem}); export the artifact again") from None
