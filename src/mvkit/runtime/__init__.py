"""Runtimes: load any artifact (checkpoint, .onnx, .pte, .mlpackage, TorchScript) as a Predictor with one call."""

from __future__ import annotations

from pathlib import Path

from mvkit.artifact import Artifact, sidecar_path
from mvkit.errors import MvkitError
from mvkit.runtime.base import Predictor

# artifact format -> function(artifact) -> Predictor; imported lazily so heavy runtimes load only when used.
def _loaders():
    def onnx(artifact):
        from mvkit.runtime.onnx_runtime import OnnxPredictor

        return OnnxPredictor(artifact)

    def executorch(artifact):
        from mvkit.runtime.executorch_runtime import ExecutorchPredictor

        return ExecutorchPredictor(artifact)

    def coreml(artifact):
        from mvkit.runtime.coreml_runtime import CoreMLPredictor

        return CoreMLPredictor(artifact)

    def litert(artifact):
        from mvkit.runtime.litert_runtime import LiteRTPredictor

        return LiteRTPredictor(artifact)

    from mvkit.runtime.torch_runtime import checkpoint_predictor, torchscript_predictor

    return {"safetensors": checkpoint_predictor, "onnx": onnx, "torchscript": torchscript_predictor,
            "executorch": executorch, "coreml": coreml, "litert": litert}


def load_predictor(path: Path | str) -> Predictor:
    path = Path(path)
    if not path.exists():
        raise MvkitError(f"{path} does not exist")
    if not sidecar_path(path).exists():
        raise MvkitError(f"{path} has no sidecar {sidecar_path(path).name}; export it with `mvkit export` so that "
                         "its labels and preprocessing travel with it")
    artifact = Artifact.load(path)
    loaders = _loaders()
    if artifact.format not in loaders:
        raise MvkitError(f"no runtime for {artifact.format} artifacts on this machine (known: {', '.join(loaders)})")
    return loaders[artifact.format](artifact)


def is_artifact(path: Path | str) -> bool:
    path = Path(path)
    return path.exists() and sidecar_path(path).exists()


__all__ = ["Predictor", "is_artifact", "load_predictor"]
