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

# The record travels as associated files appended to the flatbuffer as a zip (TFLite Support's associated-file
# layout, which Ultralytics also uses): the interpreter ignores bytes past the flatbuffer, and an app opens them
# with any zip reader. labels.txt holds one label per line, mvkit.json the whole record.
LABELS_FILE, RECORD_FILE = "labels.txt", "mvkit.json"


def embed_litert(path: Path, record: dict[str, str]) -> None:
    import json
    import zipfile

    with zipfile.ZipFile(path, "a") as bundle:
        bundle.writestr(LABELS_FILE, "\n".join(json.loads(record["labels"])) + "\n")
        bundle.writestr(RECORD_FILE, json.dumps(record))


def inspect_litert(path: Path):
    import json
    import zipfile

    from ai_edge_litert.interpreter import Interpreter

    from mvkit.metadata import FileFacts

    metadata = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            if RECORD_FILE in bundle.namelist():
                metadata = json.loads(bundle.read(RECORD_FILE))
    interpreter = Interpreter(model_path=str(path))

    def signature(details):
        return [{"name": d["name"], "shape": [int(n) for n in d["shape"]], "dtype": d["dtype"].__name__}
                for d in details]

    return FileFacts(metadata, signature(interpreter.get_input_details()), signature(interpreter.get_output_details()))
