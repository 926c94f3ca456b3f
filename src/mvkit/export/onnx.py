"""ONNX export (torch.export-based exporter, dynamic batch), float32."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.errors import MvkitError
from mvkit.export.graph import ready_for_export
from mvkit.models import preprocess_of

OPSET = 18


def export_onnx(model: nn.Module, path: Path) -> dict[str, Any]:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MvkitError("ONNX export needs its extra: pip install 'mvkit[onnx]'") from exc
    size = preprocess_of(model).size
    model = ready_for_export(model, size)
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_shapes={"x": {0: batch}}, dynamo=True, opset_version=OPSET,
                          external_data=False, verbose=False)
    return {"opset": OPSET, "input": "image", "output": "logits", "softmax_in_graph": False,
            "dynamic_batch": True}
