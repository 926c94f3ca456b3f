"""Export: one table of formats drives export, loading and benchmarking (as in Ultralytics' exporter).

Each format writes its file under a temporary name and renames it only when complete, then writes the
Artifact sidecar (format, Preprocess, labels, source). A failed conversion leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from mvkit.artifact import Artifact
from mvkit.errors import MvkitError
from mvkit.models import architecture_of, labels_of, load_model, preprocess_of


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    extra: str | None  # the pip extra its converter needs
    export: Callable[..., dict[str, Any]]  # (model, path, **options) writes the file, returns sidecar extras
    runtime: str  # what runs it
    module: str  # the import that tells whether its converter is installed


def _coreml(model: nn.Module, path: Path, **options: Any) -> dict[str, Any]:
    from mvkit.export.coreml import export_coreml

    return export_coreml(model, path, **options)


def _executorch(model: nn.Module, path: Path, **options: Any) -> dict[str, Any]:
    from mvkit.export.executorch import export_executorch

    return export_executorch(model, path, **options)


def _litert(model: nn.Module, path: Path, **options: Any) -> dict[str, Any]:
    from mvkit.export.litert import export_litert

    return export_litert(model, path, **options)


def _onnx(model: nn.Module, path: Path, **_: Any) -> dict[str, Any]:
    from mvkit.export.onnx import export_onnx

    return export_onnx(model, path)


def _torchscript(model: nn.Module, path: Path, **_: Any) -> dict[str, Any]:
    from mvkit.export.torchscript import export_torchscript

    return export_torchscript(model, path)


FORMATS: dict[str, ExportFormat] = {
    "coreml": ExportFormat("coreml", ".mlpackage", "coreml", _coreml, "Core ML (macOS/iOS)", "coremltools"),
    "executorch": ExportFormat("executorch", ".pte", "executorch", _executorch, "ExecuTorch XNNPACK", "executorch"),
    "onnx": ExportFormat("onnx", ".onnx", "onnx", _onnx, "onnxruntime", "onnxscript"),
    "litert": ExportFormat("litert", ".tflite", "litert", _litert, "LiteRT interpreter", "litert_torch"),
    "torchscript": ExportFormat("torchscript", ".torchscript.pt", None, _torchscript, "torch.jit", "torch"),
}


def available_formats() -> list[str]:
    """Formats whose converter is installed here (`all` means these)."""
    return [name for name, spec in FORMATS.items() if importlib.util.find_spec(spec.module) is not None]


def export(model_spec: str | Path, fmt: str, out_dir: Path | None = None, pretrained: bool = False,
           weights: Path | None = None, **options: Any) -> Artifact:
    """Export a checkpoint (or a zoo model with pretrained/weights) to one format; returns its Artifact.
    `options` go to the format's converter (Core ML: sizes, precision, target, compression)."""
    if fmt not in FORMATS:
        raise MvkitError(f"unknown export format {fmt!r}; available here: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    model = load_model(model_spec, pretrained=pretrained, weights=weights).eval()
    source_path = Path(model_spec)
    stem = source_path.stem if source_path.exists() else architecture_of(model)
    out_dir = Path(out_dir) if out_dir else (source_path.parent if source_path.exists() else Path("runs/export"))
    out_dir.mkdir(parents=True, exist_ok=True)
    # variants of one format get their own names: model.int8.mlpackage, model.fp32.mlpackage
    tags = [str(options[k]) for k in ("precision", "compression") if options.get(k) not in (None, "fp16", "none")]
    target = out_dir / f"{stem}{''.join('.' + t for t in tags)}{spec.suffix}"
    partial = target.with_name(f".{target.stem}.partial{spec.suffix}")  # converters check the suffix
    try:
        extra = spec.export(model, partial, **options)
        if target.is_dir():
            shutil.rmtree(target)
        partial.replace(target)
    except MvkitError:
        raise
    except Exception as exc:
        raise MvkitError(f"{fmt} export of {architecture_of(model)} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
    artifact = Artifact(path=target, format=fmt, model_name=architecture_of(model), labels=labels_of(model),
                        preprocess=preprocess_of(model), source=str(model_spec),
                        extra={**extra, "params": sum(p.numel() for p in model.parameters()),
                               "source_pretrained": pretrained,
                               "source_weights": str(weights) if weights else None})
    artifact.save()
    return artifact
