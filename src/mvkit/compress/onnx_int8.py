"""Static int8 quantization of an ONNX artifact with ONNX Runtime: QDQ format, uint8 activations and int8
per-channel weights (U8S8, the fast path of ORT's x86 kernels), calibrated on real photos with a percentile
(default) or min-max calibrator.

Never quantize_dynamic: on conv nets it emits ConvInteger, which is slow or fails to load on CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable


from mvkit.artifact import Artifact
from mvkit.compress.calibration import calibration_batches
from mvkit.errors import MvkitError
from mvkit.runtime import load_predictor


def float_nodes(graph) -> list[str]:
    """Nodes kept float: the first convolution and the classifier (the last Gemm/MatMul). Both are tiny. The
    first conv sees the raw image: on a fine-tuned EfficientNet-Lite0 quantizing it alone cost 2 points of
    top-1 on flowers (agreement 89% -> 96% when kept float). A head whose weights span a wide range (e.g.
    after a linear probe) loses its answers in int8. `graph`: an onnx GraphProto."""
    first_conv = [node.name for node in graph.node if node.op_type == "Conv"][:1]
    classifier = [node.name for node in graph.node if node.op_type in ("Gemm", "MatMul")][-1:]
    return first_conv + classifier


def attention_softmax_nodes(graph) -> list[str]:
    """Each Softmax and the MatMul that takes its output (attention weights x values), kept float: when either is
    quantized, ONNX Runtime fuses the Softmax into QLinearSoftmax, its slowest int8 kernel here (13 of 74 ms of
    MobileViT-S in its profiler). With them float, MobileViT-S int8 ran 1.71-1.75x faster than fp32 instead of
    1.09-1.29x (scratch runs on a loaded machine; the bench table in BENCHMARKS.md is the measurement)."""
    softmaxes = [node for node in graph.node if node.op_type == "Softmax"]
    outputs = {node.output[0] for node in softmaxes}
    return [node.name for node in softmaxes] + [
        node.name for node in graph.node if node.op_type == "MatMul" and outputs & set(node.input)]


def layer_norm_nodes(graph) -> list[str]:
    """LayerNormalization nodes, kept float. ORT has no int8 LayerNorm kernel: it runs them in float either way,
    but when they are quantized it stores their scale and bias as int8 and dequantizes both on every run (42
    DequantizeLinear per MobileViT-S inference, 1.8 of its 3.1 ms of dequantization in ORT's profiler)."""
    return [node.name for node in graph.node if node.op_type == "LayerNormalization"]


CALIBRATION_METHODS = ("minmax", "percentile")


def quantize_onnx_static(fp32_path: Path, data: str, count: int = 256, out: Path | None = None,
                         on_progress: Callable[[int], None] | None = None, calibration: str = "percentile") -> Artifact:
    """calibration: "percentile" (ORT's histogram, ranges clipped at the 99.999th percentile, so rare outliers do
    not stretch the int8 grid) or "minmax" (the observed extremes; 7x faster to calibrate). On the fine-tuned
    EfficientNet-Lite0 (flowers128 val, 698 photos, 256 calibration photos) percentile loses 0.14 points of
    top-1 and minmax 1.15 (BENCHMARKS.md)."""
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise MvkitError("ONNX quantization needs its extra: pip install 'mvkit[onnx]'") from exc
    if calibration not in CALIBRATION_METHODS:
        raise MvkitError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    source = Artifact.load(fp32_path)
    if source.format != "onnx" or source.extra.get("quantization"):
        raise MvkitError(f"{fp32_path} is not a float ONNX artifact; export one with `mvkit export -f onnx`")
    float_predictor = load_predictor(fp32_path)
    batches = calibration_batches(float_predictor.prepare, data, count)
    input_name = float_predictor.input_name

    class Reader(CalibrationDataReader):
        """Serves the batches; ORT's CalibStridedMinMax option calls set_range to feed them one at a time, so a
        histogram calibrator holds one batch's activations at once (all 256 photos at once took 17 GB)."""

        def __init__(self):
            self.set_range(0, len(batches))

        def __len__(self):
            return len(batches)

        def set_range(self, start_index: int, end_index: int):
            self.remaining = iter(batches[start_index:end_index])

        def get_next(self):
            batch = next(self.remaining, None)
            if batch is not None and on_progress:
                on_progress(len(batch))
            return None if batch is None else {input_name: batch}

    target = Path(out) if out else fp32_path.with_name(fp32_path.name.replace(".onnx", ".int8.onnx"))
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        partial = Path(work) / "int8.onnx"
        quantize_static(str(prepared), str(partial), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile}[calibration],
                        nodes_to_exclude=float_nodes(graph) + layer_norm_nodes(graph) + attention_softmax_nodes(graph),
                        extra_options={"CalibStridedMinMax": 1})
        partial.replace(target)
    scheme = ("static int8 QDQ, uint8 activations, int8 per-channel weights (first conv, classifier, layer norms, "
              "attention softmax and weights x values float)")
    artifact = Artifact(path=target, format="onnx", model_name=source.model_name, labels=source.labels,
                        preprocess=source.preprocess, source=source.source,
                        extra={**source.extra, "quantization": scheme,
                               "calibration_images": sum(len(b) for b in batches), "calibration_data": data,
                               "calibration": calibration,
                               "float_artifact": str(fp32_path)})
    artifact.save()
    return artifact
