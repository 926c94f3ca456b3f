"""Export: a checkpoint (or a zoo model with weights) to one format of the format table (mvkit.formats).

Each format writes its file under a temporary name, writes mvkit's record into it (mvkit.metadata), and it is
renamed only when complete; then the Artifact sidecar (format, Preprocess, labels, source). A failed conversion
leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvkit.artifact import Artifact
from mvkit.errors import MvkitError
from mvkit.files import atomic_output
from mvkit.formats import Format, available_formats, get_format, resolve
from mvkit.metadata import embed
from mvkit.models import architecture_of, labels_of, load_model, preprocess_of

__all__ = ["ExportPlan", "available_formats", "export", "plan_export", "target_path"]


@dataclass(frozen=True)
class ExportPlan:
    """One format's export, checked before any conversion: the row, its full options, and the file it writes."""
    row: Format
    options: dict[str, Any]


def plan_export(fmt: str, options: dict[str, Any] | None = None) -> ExportPlan:
    """Check a format and the options the user gave for it (refused by name if the format does not take them)."""
    row = get_format(fmt)
    if row.exporter is None:
        raise MvkitError(f"{fmt} is not an export format; choose from {', '.join(available_formats())}")
    row.require_export()
    return ExportPlan(row, row.check_options(options or {}))


def target_path(stem: str, out_dir: Path, plan: ExportPlan) -> Path:
    """Variants of one format get their own names: model.fp32.mlpackage, model.int8.mlpackage."""
    tags = [str(plan.options[option.name]) for option in plan.row.options
            if option.in_file_name and plan.options[option.name] != option.default]
    return out_dir / f"{stem}{''.join('.' + t for t in tags)}{plan.row.suffix}"


def default_out_dir(model_spec: str | Path) -> Path:
    source = Path(model_spec)
    return source.parent if source.is_file() else Path("runs/export")


def export(model_spec: str | Path, fmt: str, out_dir: Path | None = None, pretrained: bool = False,
           weights: Path | None = None, model=None, **options: Any) -> Artifact:
    """Export a checkpoint (or a zoo model with pretrained/weights) to one format; returns its Artifact.
    `options`: the format's own (Core ML: sizes, precision, target, compression); others are refused.
    `model`: the already loaded model of `model_spec`, to load it once for several formats (not changed)."""
    plan = plan_export(fmt, options)
    model = (model if model is not None else load_model(model_spec, pretrained=pretrained, weights=weights)).eval()
    source_path = Path(model_spec)
    stem = source_path.name.removesuffix(".safetensors") if source_path.is_file() else architecture_of(model)
    out_dir = Path(out_dir) if out_dir else default_out_dir(model_spec)
    target = target_path(stem, out_dir, plan)
    source_extra = Artifact.load(source_path).inherited_extra() if source_path.is_file() else {}
    with atomic_output(target) as partial:
        extra = resolve(plan.row.exporter)(model, partial, **plan.options)
        artifact = Artifact(path=target, format=plan.row.name, model_name=architecture_of(model), labels=labels_of(model),
                            preprocess=preprocess_of(model), source=str(model_spec),
                            extra={**extra, **source_extra, "params": sum(p.numel() for p in model.parameters()),
                                   "source_pretrained": pretrained,
                                   "source_weights": str(weights) if weights else None})
        embed(artifact, written=partial)  # the file describes itself before it gets its final name
    artifact.save()
    return artifact
