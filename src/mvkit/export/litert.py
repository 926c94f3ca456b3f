"""LiteRT (TFLite) export with litert-torch: a .tflite flatbuffer, batch 1, float32, NCHW input as in PyTorch.

An optional extra (`mvkit[litert]`): it pulls JAX, transformers and an older typing-extensions than
coremltools' cattrs wants, so it is not part of `dev`/`all`; install it in its own environment if Core ML
export is needed beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.export.graph import conversion_error, ready_for_export
from mvkit.models import architecture_of, preprocess_of


def export_litert(model: nn.Module, path: Path) -> dict[str, Any]:
    import litert_torch

    size = preprocess_of(model).size
    ready = ready_for_export(model, size)
    try:
        converted = litert_torch.convert(ready, (torch.zeros(1, 3, size, size),))
        converted.export(str(path))
    except Exception as exc:
        raise conversion_error("litert", architecture_of(model), exc, None,
                               "Export ONNX or ExecuTorch instead, or report the operator to litert-torch.") from exc
    return {"batch": 1, "input": "image", "layout": "NCHW", "softmax_in_graph": False}
