"""ONNX Runtime predictor, configured for this machine: all graph optimisations, intra-op threads = cores."""

from __future__ import annotations

import numpy as np

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor, softmax, usable_cores


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    return options


class OnnxPredictor(Predictor):
    def __init__(self, artifact: Artifact, threads: int | None = None):
        super().__init__(artifact)
        import onnxruntime as ort  # installed: the format table checks it first
        options = session_options(threads)
        self._threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(artifact.path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.outputs_probabilities = bool(artifact.extra.get("softmax_in_graph", False))

    @property
    def threads(self) -> int:
        return self._threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        output = self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]
        return output if self.outputs_probabilities else softmax(output.astype(np.float64)).astype(np.float32)


def inspect_onnx(path: Path):
    """metadata_props and the graph's inputs/outputs, as ONNX Runtime (the app's runtime) reads them."""
    import onnxruntime as ort

    from mvkit.metadata import FileFacts

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # reading, not running
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def signature(values):
        return [{"name": v.name, "shape": [d if isinstance(d, int) else -1 for d in v.shape],
                 "dtype": v.type.removeprefix("tensor(").removesuffix(")")} for v in values]

    return FileFacts(dict(session.get_modelmeta().custom_metadata_map), signature(session.get_inputs()),
                     signature(session.get_outputs()))
