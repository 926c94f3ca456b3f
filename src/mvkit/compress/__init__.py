"""Compression: int8 for every format that has an int8 method in the format table (mvkit.formats): static int8
calibrated on real photos (ONNX Runtime QDQ, PT2E for ExecuTorch and LiteRT), QAT, PyTorch dynamic int8.

plan_quantize checks the whole request (source, formats, method, options, calibration data, output folder)
before any conversion; quantize then runs one planned entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mvkit.artifact import Artifact
from mvkit.errors import MvkitError
from mvkit.files import check_writable
from mvkit.formats import FORMATS, Int8Method, check_options, format_names, int8_formats, int8_method, resolve

METHODS = ("ptq", "qat", "dynamic")


@dataclass(frozen=True)
class QuantizePlan:
    fmt: str
    method: str
    entry: Int8Method
    options: dict[str, Any]


def plan_quantize(source: Path, method: str, formats: list[str], data: str | None,
                  options: dict[str, Any] | None = None) -> list[QuantizePlan]:
    """Every check of `mvkit quantize`, before any work. `options`: only those the user gave."""
    from mvkit.data.datasets import check_data_spec

    options = options or {}
    if method not in METHODS:
        raise MvkitError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    source = Path(source)
    source_format = Artifact.load(source, "quantize starts from an mvkit checkpoint (.safetensors) or a float "
                                          "ONNX artifact").format
    if not formats or "all" in formats:
        chosen = [fmt for fmt in int8_formats(method) if FORMATS[fmt].can_export()
                  and source_format in FORMATS[fmt].int8[method].sources]
        if not chosen:
            raise MvkitError(f"no installed format makes {method} int8 from a {source_format} artifact "
                             f"(formats with {method}: {', '.join(int8_formats(method)) or 'none'})")
    else:
        chosen = format_names(formats)
    plans = []
    for fmt in chosen:
        entry = int8_method(fmt, method, source_format)
        FORMATS[fmt].require_export()
        taken = {name: value for name, value in options.items() if name in {o.name for o in entry.options}}
        plans.append(QuantizePlan(fmt, method, entry, check_options(entry.options, taken, f"{fmt} {method}")))
    accepted = tuple(option for plan in plans for option in plan.entry.options)
    unused = {name: value for name, value in options.items() if name not in {o.name for o in accepted}}
    if unused:
        check_options(accepted, unused, f"{method} to {', '.join(chosen)}")  # refuses them by name
    if any(plan.entry.calibrated for plan in plans):
        if data is None:
            raise MvkitError(f"--method {method} needs calibration photos: --calib DATA")
        check_data_spec(data, "--calib")
    check_writable(source.parent)
    return plans


def quantize(plan: QuantizePlan, source: Path, data: str | None, count: int = 256,
             on_progress: Callable[[int], None] | None = None) -> Artifact:
    """Run one planned int8 entry; returns the int8 artifact (written beside `source`)."""
    from mvkit.metadata import embed_or_remove

    function = resolve(plan.entry.function)
    if plan.entry.calibrated:
        return embed_or_remove(function(Path(source), data, count, on_progress=on_progress, **plan.options))
    return embed_or_remove(function(Path(source), **plan.options))
