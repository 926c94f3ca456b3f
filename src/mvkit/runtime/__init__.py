"""Runtimes: load any artifact (checkpoint, .onnx, .pte, .mlpackage, TorchScript) as a Predictor with one call.
Which Predictor runs which format is the `loader` of its row in the format table (mvkit.formats)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mvkit.artifact import Artifact, sidecar_path
from mvkit.errors import MvkitError
from mvkit.formats import FORMATS, resolve
from mvkit.runtime.base import Predictor


def load_predictor(path: Path | str) -> Predictor:
    path = Path(path)
    artifact = Artifact.load(path)
    row = FORMATS.get(artifact.format)
    if row is None:
        raise MvkitError(f"{sidecar_path(path)} names format {artifact.format!r}, which mvkit cannot run "
                         f"(known: {', '.join(FORMATS)})")
    row.require_runtime()
    with reading(path, artifact.format, row.runtime):
        return resolve(row.loader)(artifact)


@contextmanager
def reading(path: Path, fmt: str, reader: str) -> Iterator[None]:
    """A file that a runtime's own parser refuses (truncated, damaged) becomes one clear MvkitError."""
    try:
        yield
    except MvkitError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MvkitError(f"{path} cannot be read by {reader} ({type(exc).__name__}: {reason[:300]}); the "
                         f"file is damaged, truncated or not a {fmt} file: export it again") from exc


def is_artifact(path: Path | str) -> bool:
    """A file with a sidecar, or an exported file that may describe itself (Artifact.load reads it)."""
    from mvkit.metadata import row_for_file

    path = Path(path)
    return path.exists() and (sidecar_path(path).exists() or row_for_file(path) is not None)


__all__ = ["Predictor", "is_artifact", "load_predictor"]
