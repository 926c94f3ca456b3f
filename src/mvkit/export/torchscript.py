"""TorchScript (traced) for legacy apps. PyTorch Mobile's optimize_for_mobile / lite interpreter is deprecated:
mvkit does not apply it; ExecuTorch (.pte) is PyTorch's mobile runtime now."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.export.graph import conversion_error
from mvkit.models import architecture_of, preprocess_of


def export_torchscript(model: nn.Module, path: Path) -> dict[str, Any]:
    size = preprocess_of(model).size
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated; this format is for old apps
            traced = torch.jit.trace(model, torch.zeros(1, 3, size, size), check_trace=False)
            traced = torch.jit.freeze(traced.eval())
    except Exception as exc:
        raise conversion_error("torchscript", architecture_of(model), exc, None,
                               "Export ExecuTorch or ONNX instead.") from exc
    torch.jit.save(traced, str(path))
    return {"traced": True, "mobile_optimized": False,
            "note": "for new apps use ExecuTorch: optimize_for_mobile and the lite interpreter are deprecated"}


def embed_torchscript(path: Path, record: dict[str, str]) -> None:
    """The mvkit record as TorchScript extra files (C++: torch::jit::load(path, device, extra_files))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
        torch.jit.save(module, str(path), _extra_files=dict(record))


def inspect_torchscript(path: Path):
    from mvkit.metadata import KEYS, FileFacts

    files = {key: "" for key in KEYS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    metadata = {key: value.decode() if isinstance(value, bytes) else value for key, value in files.items() if value}
    inputs = [{"name": value.debugName(), "shape": None, "dtype": str(value.type())}
              for value in list(module.graph.inputs())[1:]]  # the first is the module itself
    output = {"name": "output", "shape": None, "dtype": str(module.graph.return_node().input().type())}
    return FileFacts(metadata, inputs, [output])  # a traced file keeps no shapes: the record's preprocess has them
