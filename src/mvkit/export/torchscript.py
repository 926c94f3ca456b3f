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
