"""Static int8 for OpenVINO: NNCF post-training quantization of the converted IR, calibrated on real training
photos. As on the other int8 paths, the first convolution and the classifier stay float (see
onnx_int8.float_nodes for why). In the IR their friendly names no longer carry the module path (batch norms are
folded into the convolutions), so they are found by position: the first Convolution and the last MatMul."""

from __future__ import annotations

import logging
from pathlib import Path

from mvkit.artifact import Artifact
from mvkit.compress.calibration import calibration_batches
from mvkit.compress.pt2e import Progress, load_float_checkpoint
from mvkit.errors import require_extra
from mvkit.export.graph import conversion_error
from mvkit.export.openvino import IR_NAME, convert, from_weights, save_ir
from mvkit.files import atomic_output
from mvkit.models import architecture_of, labels_of
from mvkit.runtime import load_predictor


def kept_float_nodes(ov_model) -> list[str]:
    """Friendly names of the first Convolution and of the classifier (the last MatMul)."""
    ops = ov_model.get_ordered_ops()
    first_conv = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"][:1]
    classifier = [op.get_friendly_name() for op in ops if op.get_type_name() == "MatMul"][-1:]
    return first_conv + classifier


def attention_nodes(ov_model) -> list[str]:
    """Friendly names of the attention ops: the ScaledDotProductAttention ops that OpenVINO's frontend fuses
    matmul + softmax + matmul into (mvkit's IR and timm's fused attention both become one), and any MatMul left
    between two activations (scores, scores x values) rather than an activation and weights."""
    def is_attention(op) -> bool:
        if op.get_type_name() == "ScaledDotProductAttention":
            return True
        return op.get_type_name() == "MatMul" and not any(from_weights(port) for port in op.inputs())
    return [op.get_friendly_name() for op in ov_model.get_ordered_ops() if is_attention(op)]


def quantize_openvino(checkpoint: Path, data: str, count: int = 256, out: Path | None = None,
                      on_progress: Progress = None, attention_float: bool = False, preset: str = "performance",
                      transformer: bool = False) -> Artifact:
    """NNCF's own defaults: the performance preset (symmetric int8 weights and activations) and its default
    scheme, also for MobileViT. On MobileViT-S the mixed preset's asymmetric activations sent most int8
    convolutions to the CPU plugin's slower jit kernels instead of brgconv, and NNCF's transformer scheme was
    slower as well; no choice moved a trained MobileViT-XXS's top-1 by more than 0.6 points (BENCHMARKS.md,
    "Where MobileViT-S spends its time under OpenVINO"). `attention_float` also keeps the attention ops float;
    the other choices are for benchmarks/profile_openvino.py."""
    require_extra("openvino", ("openvino", "nncf"), "OpenVINO int8")
    import nncf

    checkpoint, source, model = load_float_checkpoint(checkpoint, "OpenVINO int8")
    batches = calibration_batches(load_predictor(checkpoint), data, count)
    ov_model = convert(model, fmt="openvino int8")
    kept = kept_float_nodes(ov_model) + (attention_nodes(ov_model) if attention_float else [])
    target = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}.int8_openvino")
    nncf.set_log_level(logging.ERROR)

    try:
        quantized = nncf.quantize(
            ov_model, nncf.Dataset(batches), subset_size=sum(len(b) for b in batches),
            preset=nncf.QuantizationPreset(preset),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=nncf.IgnoredScope(names=kept, validate=True))
    except Exception as exc:
        raise conversion_error("openvino int8", architecture_of(model), exc, None,
                               "Use ONNX or ExecuTorch int8 instead, or report it to NNCF.") from exc
    if on_progress:  # NNCF runs its calibration passes itself: the photos count as done once it returns
        on_progress(sum(len(b) for b in batches))
    quantization = (f"static int8 NNCF ({preset} preset{', transformer' if transformer else ''}), int8 weights and "
                    "activations, first conv and classifier float")
    with atomic_output(target) as partial:
        save_ir(quantized, partial)
    artifact = Artifact(path=target, format="openvino", model_name=source.model_name, labels=labels_of(model),
                        preprocess=source.preprocess, source=str(checkpoint),
                        extra={"input": "image", "output": "logits", "softmax_in_graph": False, "dynamic_batch": True,
                               "ir": IR_NAME, "weights": "int8",
                               # the plugin's default precision (bf16 where the CPU has it) for the float ops: with
                               # SeparateQKVAttention there is no split to reorder, and MobileViT-S int8 ran faster in
                               # bf16 than in f32 in each of 6 interleaved scratch runs (by 2-22%)
                               "inference_precision": "default",
                               "quantization": quantization, "kept_float": kept,
                               "calibration_images": sum(len(b) for b in batches), "calibration_data": data,
                               "params": sum(p.numel() for p in model.parameters()), **source.inherited_extra()})
    artifact.save()
    return artifact
