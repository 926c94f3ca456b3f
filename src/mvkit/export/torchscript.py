"""TorchScript (traced) for legacy apps. PyTorch Mobile's optimize_for_mobile / lite interpreter is deprecated:
mvkit does not apply it; ExecuTorch (.pte) is PyTorch's mobile runtime now."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.models import preprocess_of


def export_torchscript(model: nn.Module, path: Path) -> dict[str, Any]:
    size = preprocess_of(model).size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; this format is for old apps
        traced = torch.jit.trace(model, torch.zeros(1, 3, size, size), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
        torch.jit.save(traced, str(path))
    return {"traced": True, "mobile_optimized": False,
            "note": "for new apps use ExecuTorch: optimize_for_mobile and the lite interpreter are deprecated"}
