"""Static int8 quantization of an ONNX artifact with ONNX Runtime: QDQ format, uint8 activations and int8
per-channel weights (U8S8, the fast path of ORT's x86 kernels), calibrated on real photos with a percentile
(default) or min-max calibrator.

Never quantize_dynamic: on conv nets it emits ConvInteger, which is slow or fails to load on CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable


from mvkit.artifact import Artifact, sidecar_path
from mvkit.compress.calibration import calibration_batches
from mvkit.errors import MvkitError, require_extra
from mvkit.files import atomic_output, remove
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


def _exported_from(float_onnx: Path, checkpoint: Path) -> bool:
    """Whether a float ONNX artifact was exported from this checkpoint after its last change (reusable)."""
    try:
        artifact = Artifact.load(float_onnx)
    except MvkitError:
        return False
    source = artifact.source
    return (artifact.format == "onnx" and not artifact.extra.get("quantization") and source is not None
            and Path(source).resolve() == checkpoint.resolve()
            and float_onnx.stat().st_mtime >= checkpoint.stat().st_mtime)


def x86_without_vnni() -> bool:
    """An x86 CPU without VNNI (AVX2 / AVX-512F only) multiplies uint8 x int8 with vpmaddubsw, whose int16 sums
    saturate: ONNX Runtime's documentation asks for 7-bit weights (reduce_range) there. On a fine-tuned
    EfficientNet-Lite0 on such a CPU (AMD EPYC, AVX2), int8 with 8-bit weights agreed with the float model on
    8 of 15 flower photos."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    return not any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quantize_onnx(source: Path, data: str, count: int = 256, out: Path | None = None,
                  on_progress: Callable[[int], None] | None = None, calibration: str = "percentile") -> Artifact:
    """The format table's ONNX int8 entry: from a float ONNX artifact, or from a checkpoint (exported to float
    ONNX beside it first; removed again if this command made it and quantization fails)."""
    source = Path(source)
    if Artifact.load(source).format == "onnx":
        return quantize_onnx_static(source, data, count, out, on_progress, calibration)
    from mvkit.export import export

    float_path = source.with_name(source.name.removesuffix(".safetensors") + ".onnx")
    made_here = not float_path.exists()
    if not made_here and _exported_from(float_path, source):
        return quantize_onnx_static(float_path, data, count, out, on_progress, calibration)
    float_onnx = export(source, "onnx").path
    try:
        return quantize_onnx_static(float_onnx, data, count, out, on_progress, calibration)
    except BaseException:
        if made_here:
            remove(float_onnx)
            remove(sidecar_path(float_onnx))
        raise


def quantize_onnx_static(fp32_path: Path, data: str, count: int = 256, out: Path | None = None,
                         on_progress: Callable[[int], None] | None = None, calibration: str = "percentile") -> Artifact:
    """calibration: "percentile" (ORT's histogram, ranges clipped at the 99.999th percentile, so rare outliers do
    not stretch the int8 grid) or "minmax" (the observed extremes; 7x faster to calibrate). On the fine-tuned
    EfficientNet-Lite0 (flowers128 val, 698 photos, 256 calibration photos) percentile loses 0.14 points of
    top-1 and minmax 1.15 (BENCHMARKS.md)."""
    require_extra("onnx", ("onnx", "onnxruntime.quantization"), "ONNX int8")
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration not in ("minmax", "percentile"):
        raise MvkitError(f"--calibration must be percentile or minmax, not {calibration!r}")
    source = Artifact.load(fp32_path)
    if source.format != "onnx" or source.extra.get("quantization"):
        raise MvkitError(f"{fp32_path} is not a float ONNX artifact; export one with `mvkit export -f onnx`")
    float_predictor = load_predictor(fp32_path)
    batches = calibration_batches(float_predictor, data, count)
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
    reduce_range = x86_without_vnni()
    with tempfile.TemporaryDirectory(dir=target.parent) as work, atomic_output(target) as partial:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        quantize_static(str(prepared), str(partial), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile}[calibration],
                        nodes_to_exclude=float_nodes(graph) + layer_norm_nodes(graph) + attention_softmax_nodes(graph),
                        reduce_range=reduce_range,
                        extra_options={"CalibStridedMinMax": 1})
    scheme = ("static int8 QDQ, uint8 activations, int8 per-channel weights (first conv, classifier, layer norms, "
              "attention softmax and weights x values float)")
    artifact = Artifact(path=target, format="onnx", model_name=source.model_name, labels=source.labels,
                        preprocess=source.preprocess, source=source.source,
                        extra={**source.extra, "quantization": scheme,
                               "calibration_images": sum(len(b) for b in batches), "calibration_data": data,
                               "calibration": calibration, "reduce_range": reduce_range,
                               "float_artifact": str(fp32_path)})
    artifact.save()
    return artifact
