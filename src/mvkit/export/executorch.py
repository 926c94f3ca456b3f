"""ExecuTorch export: a .pte program with the XNNPACK delegate (PyTorch's mobile runtime since the lite
interpreter was deprecated), batch 1, float32; int8 programs come from PT2E quantization (mvkit.compress.pt2e).

Attention is exported as plain matmul + softmax (timm's fused_attn=False, same math): XNNPACK does not take
fused SDPA, and leaving it outside the delegate made MobileViT 1.5-2.5x slower here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.errors import MvkitError
from mvkit.export.graph import capture, conversion_error, ready_for_export
from mvkit.models import architecture_of, preprocess_of


def _require_executorch():
    try:
        from executorch.exir import to_edge_transform_and_lower  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    except ImportError as exc:
        raise MvkitError("ExecuTorch export needs its extra: pip install 'mvkit[executorch]'") from exc


def lower_to_pte(program: torch.export.ExportedProgram, path: Path, model_name: str) -> dict[str, Any]:
    """Lower an exported program to XNNPACK and write the .pte; reports how much of the graph was delegated."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        delegated = sum(1 for node in edge.exported_program().graph.nodes
                        if node.op == "call_function" and "executorch_call_delegate" in str(node.target))
        left = sorted({str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
                       for node in edge.exported_program().graph.nodes
                       if node.op == "call_function" and "executorch_call_delegate" not in str(node.target)
                       and "getitem" not in str(node.target)})
        buffer = edge.to_executorch().buffer
    except Exception as exc:
        raise conversion_error("executorch", model_name, exc, program,
                               "Export ONNX instead, or report the operator to ExecuTorch.") from exc
    path.write_bytes(buffer)
    return {"backend": "xnnpack", "delegate_pieces": delegated, "ops_outside_delegate": left, "batch": 1,
            "input": "image", "softmax_in_graph": False}


def export_executorch(model: nn.Module, path: Path, **_: Any) -> dict[str, Any]:
    _require_executorch()
    size = preprocess_of(model).size
    program = capture(ready_for_export(model, size), torch.zeros(1, 3, size, size), fmt="executorch")
    return lower_to_pte(program, path, architecture_of(model))
