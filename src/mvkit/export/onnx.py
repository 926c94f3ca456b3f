"""ONNX export (torch.export-based exporter, dynamic batch), float32."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mvkit.export.graph import conversion_error, ready_for_export, swap_modules
from mvkit.models import architecture_of, preprocess_of

OPSET = 18


class FlatLinear(nn.Module):
    """A Linear on a [..., C] input computed on its [N, C] view, so ONNX gets Gemm instead of MatMul + Add.

    MobileViT's transformer Linears see 3-D token tensors. As MatMul + Add, ONNX Runtime's int8 runs the bias as
    a separate QLinearAdd (36 in MobileViT-S); as Gemm, the QDQ Gemm becomes one QGemm with the bias inside.
    MobileViT-S int8 p50 at 256 px, both forms in one interleaved run: 22.6 -> 21.3 ms and 21.8 -> 19.9 ms in
    two runs (BENCHMARKS.md, speed remarks). Written here because the exporter has no such option."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.reshape(-1, x.shape[-1]), self.linear.weight, self.linear.bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def flatten_linears(model: nn.Module) -> None:
    """Every Linear but the classifier (which sees [batch, features] already) becomes a FlatLinear, in place."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    swap_modules(model, lambda m: type(m) is nn.Linear and m is not head, FlatLinear)


def export_onnx(model: nn.Module, path: Path) -> dict[str, Any]:
    size = preprocess_of(model).size
    ready = ready_for_export(model, size)
    flatten_linears(ready)
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ready, (example,), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_shapes={"x": {0: batch}}, dynamo=True, opset_version=OPSET,
                              external_data=False, verbose=False)
    except Exception as exc:
        raise conversion_error("onnx", architecture_of(model), exc, None,
                               "Export ExecuTorch or TorchScript instead, or report the operator to PyTorch.") from exc
    return {"opset": OPSET, "input": "image", "output": "logits", "softmax_in_graph": False,
            "dynamic_batch": True}


def embed_onnx(path: Path, record: dict[str, str]) -> None:
    """The mvkit record as the model's metadata_props (ONNX Runtime: get_modelmeta().custom_metadata_map)."""
    import onnx

    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in record]
    del model.metadata_props[:]
    for key, value in [*kept, *record.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
