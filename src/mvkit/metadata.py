"""What an exported file says about itself: one schema of string keys and values, written into every artifact in
its format's own convention (ONNX metadata_props, Core ML user-defined metadata, ExecuTorch constant methods,
OpenVINO rt_info, TorchScript extra files, a LiteRT associated file), so an app that ships only the file still
knows its labels and preprocessing. Each format's writer and reader is named in its row of the format table
(`embed`, `inspect`); this module builds the record, calls them, and turns a record back into an Artifact.

The sidecar stays the richer record (verification results, measurements); the file carries what running it needs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvkit.artifact import Artifact, sidecar_path, source_as_loaded
from mvkit.errors import MvkitError
from mvkit.files import atomic_output, remove
from mvkit.preprocess import Preprocess

SCHEMA = "1"
# What the pixels must be before `preprocess` applies (mvkit's Preprocess always means this).
PIXELS = {"channel_order": "RGB", "layout": "NCHW", "pixel_range": "0-1 (pixel / 255), then (x - mean) / std"}
KEYS = ("mvkit_schema", "mvkit_version", "format", "architecture", "labels", "preprocess", "output", "compression",
        "source", "source_sha256", "extra")


@dataclass
class FileFacts:
    """What a format's own reader finds in a file: the mvkit record (empty when it has none) and its signature."""
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "shape", "dtype"}; -1: any size
    outputs: list[dict[str, Any]] = field(default_factory=list)


def sha256_of(path: Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compression_of(artifact: Artifact) -> str:
    extra = artifact.extra
    if extra.get("quantization"):
        return str(extra["quantization"])
    parts = [f"{key} {extra[key]}" for key in ("precision", "compression") if extra.get(key) not in (None, "none")]
    return ", ".join(parts) or "none (float32)"


def record_of(artifact: Artifact) -> dict[str, str]:
    """The artifact's self-description, every value a string (JSON for lists and objects)."""
    from mvkit import __version__

    source = artifact.source
    stored = artifact.to_dict()
    return {
        "mvkit_schema": SCHEMA,
        "mvkit_version": __version__,
        "format": artifact.format,
        "architecture": artifact.model_name,
        "labels": json.dumps(list(artifact.labels)),
        "preprocess": json.dumps({**artifact.preprocess.to_dict(), **PIXELS}),
        "output": "probabilities" if artifact.extra.get("softmax_in_graph") else "logits",
        "compression": compression_of(artifact),
        "source": stored["source"] or "",
        "source_sha256": (sha256_of(Path(source)) if source else None) or "",
        "extra": json.dumps(artifact.extra, default=str),
    }


def artifact_from_record(path: Path, metadata: dict[str, str]) -> Artifact:
    """An Artifact from what the file says about itself (no sidecar needed)."""
    try:
        preprocess = json.loads(metadata["preprocess"])
        labels = json.loads(metadata["labels"])
        if not isinstance(labels, list) or not labels or not all(isinstance(l, str) and l for l in labels):
            raise ValueError("labels must be a non-empty list of names")
        return Artifact(path=Path(path), format=metadata["format"], model_name=metadata["architecture"],
                        labels=labels, preprocess=Preprocess.from_dict(preprocess),
                        source=source_as_loaded(metadata.get("source") or None, path),
                        extra=json.loads(metadata.get("extra") or "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        problem = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise MvkitError(f"{path} carries damaged mvkit metadata ({problem}); export it again") from None


def row_for_file(path: Path):
    """The format-table row whose files look like `path` (by suffix), or None."""
    from mvkit.formats import FORMATS

    path = Path(path)
    if path.suffix == ".xml" and path.parent.name.endswith(FORMATS["openvino"].suffix):
        path = path.parent
    matches = [row for row in FORMATS.values() if row.inspect and path.name.endswith(row.suffix)]
    return max(matches, key=lambda row: len(row.suffix), default=None)  # .torchscript.pt before .pt


def read_facts(path: Path) -> FileFacts | None:
    """The file's own facts through its format's reader; None when no row reads files like it."""
    from mvkit.formats import resolve

    row = row_for_file(path)
    if row is None or not row.can_run():
        return None
    from mvkit.runtime import reading

    with reading(Path(path), row.name, row.runtime):
        return resolve(row.inspect)(Path(path))


def load_from_file(path: Path) -> Artifact | None:
    """The artifact as the file describes itself, or None when it carries no mvkit record."""
    facts = read_facts(path)
    if facts is None or not facts.metadata:
        return None
    artifact = artifact_from_record(path, facts.metadata)
    if path.suffix == ".xml":  # an IR's .xml given for its folder
        artifact.path = Path(path).parent
    return artifact


def embed(artifact: Artifact, written: Path | None = None) -> None:
    """Write the artifact's record into its file. `written`: where the file is now, when still under a temporary
    name (inside atomic_output); else the finished file is rewritten through a temporary copy."""
    from mvkit.formats import FORMATS, resolve

    row = FORMATS[artifact.format]
    if row.embed is None:
        return
    record = record_of(artifact)
    if written is not None:
        resolve(row.embed)(Path(written), record)
        return
    target = Path(artifact.path)
    with atomic_output(target) as partial:
        (shutil.copytree if target.is_dir() else shutil.copy2)(target, partial)
        resolve(row.embed)(partial, record)


def embed_or_remove(artifact: Artifact) -> Artifact:
    """embed() for a finished artifact; if that fails the file and its sidecar go too (no half-described file)."""
    try:
        embed(artifact)
    except BaseException:
        remove(Path(artifact.path))
        remove(sidecar_path(Path(artifact.path)))
        raise
    return artifact


# What inspect shows, each parsed from a record: the file's own, or one made from the sidecar
SHOWN = {"format": str, "architecture": str, "labels": json.loads, "preprocess": json.loads, "output": str,
         "compression": str, "source": str, "source_sha256": str, "mvkit_version": str}
NOT_IN_SIDECARS = ("source_sha256", "mvkit_version")  # facts of when the file was written


def inspect_artifact(path: Path) -> dict[str, Any]:
    """What the file says about itself and what its sidecar says: each value with where it came from ("file",
    "sidecar"), the file's inputs and outputs, and the keys on which the two disagree."""
    path = Path(path)
    if not path.exists():
        raise MvkitError(f"{path} does not exist")
    facts = read_facts(path)
    sidecar = Artifact.load(path) if sidecar_path(path).exists() else None
    if facts is None and sidecar is None:
        raise MvkitError(f"{path} is no artifact mvkit can read: no sidecar, and no installed format reads files "
                         "named like it")
    record = facts.metadata if facts else {}
    from_sidecar = {key: value for key, value in record_of(sidecar).items()
                    if key not in NOT_IN_SIDECARS} if sidecar else {}
    values, mismatches = {}, []
    for key, parse in SHOWN.items():
        in_file = parse(record[key]) if record.get(key) else None
        in_sidecar = parse(from_sidecar[key]) if from_sidecar.get(key) else None
        where = [name for name, value in (("file", in_file), ("sidecar", in_sidecar)) if value is not None]
        if in_file is not None and in_sidecar is not None and in_file != in_sidecar:
            mismatches.append(key)
        values[key] = {"value": in_file if in_file is not None else in_sidecar, "from": where}
    if values["format"]["value"] is None and facts is not None:  # a file made elsewhere: its reader knows the format
        values["format"] = {"value": row_for_file(path).name, "from": ["file name"]}
    return {"path": str(path), "format": values["format"]["value"],
            "described_by_file": bool(record), "has_sidecar": sidecar is not None,
            "inputs": facts.inputs if facts else [], "outputs": facts.outputs if facts else [],
            "values": values, "mismatches": mismatches,
            "sidecar_extra": sidecar.extra if sidecar else json.loads(record.get("extra") or "{}")}
