"""Static int8 for LiteRT: litert-torch's PT2E quantizer (int8 per-channel symmetric weights, int8
activations) calibrated on real photos, then converted to a .tflite. The first conv and the classifier stay
float, as on the other int8 paths. Needs the optional `litert` extra (its own environment, see README)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from mvkit.artifact import Artifact
from mvkit.compress.calibration import calibration_batches
from mvkit.compress.pt2e import (Progress, calibrate_graph, fuse_conv_clamp, in_modules, kept_float,
                                 load_float_checkpoint)
from mvkit.errors import MvkitError, require_extra
from mvkit.files import atomic_output
from mvkit.export.graph import capture, conversion_error, ready_for_export, swap_modules
from mvkit.models import architecture_of, labels_of, preprocess_of
from mvkit.runtime import load_predictor


def _shares_with(node: torch.fx.Node, nodes: set) -> bool:
    """Whether a node's quantization annotation shares a qspec with the output of, or an edge from, `nodes`."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    annotation = node.meta.get("quantization_annotation")
    if annotation is None:
        return False
    specs = [annotation.output_qspec, *annotation.input_qspec_map.values()]
    for spec in specs:
        if isinstance(spec, SharedQuantizationSpec):
            target = spec.edge_or_node
            if (target[0] if isinstance(target, tuple) else target) in nodes:
                return True
    return False


class SigmoidTimesInput(nn.Module):
    """SiLU written as x * sigmoid(x), the same math. litert-torch's quantizer annotates sigmoid and mul but not
    silu, so a SiLU module stays float with a dequantize and a quantize around it. Written out, both ops run
    int8: on MobileViT-S 33 of 34 LOGISTIC and their MULs became int8 (the float first conv's stays float),
    with 32 DEQUANTIZE and 31 QUANTIZE fewer, and int8 went from 1.30x to 1.41x its fp32 (p50, one interleaved
    scratch run of 40 rounds). MobileViT-XXS distilled, flowers128 val: 98.4% agreement (98.0% before)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def write_out_silu(model: nn.Module) -> nn.Module:
    """Replaces every nn.SiLU module of `model` (in place) by SigmoidTimesInput."""
    swap_modules(model, lambda m: isinstance(m, nn.SiLU), lambda _: SigmoidTimesInput())
    return model


def quantize_litert(checkpoint: Path, data: str, count: int = 256, out: Path | None = None,
                    on_progress: Progress = None) -> Artifact:
    require_extra("litert", ("litert_torch",), "LiteRT int8")
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    checkpoint, source, model = load_float_checkpoint(checkpoint, "LiteRT int8")
    size = preprocess_of(model).size
    example = torch.zeros(1, 3, size, size)
    kept = kept_float(model)

    class KeepFloatQuantizer(PT2EQuantizer):
        """Quantizes a conv's ReLU6 after the clamp (pt2e.fuse_conv_clamp: the same flaw as XNNPACK's quantizer)
        and drops the annotations of the kept modules' nodes (litert-torch's set_module_name refuses None), and of
        the nodes that share a kept node's quantization."""

        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            graph = super().annotate(graph)
            fuse_conv_clamp(graph)
            dropped = {node for node in graph.graph.nodes if in_modules(node, kept)}
            while True:
                sharing = {node for node in graph.graph.nodes if node not in dropped and _shares_with(node, dropped)}
                if not sharing:
                    break
                dropped |= sharing
            for node in dropped:
                node.meta.pop("quantization_annotation", None)
            return graph

    quantizer = KeepFloatQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    batches = calibration_batches(load_predictor(checkpoint), data, count)
    graph = capture(write_out_silu(ready_for_export(model, size)), example, fmt="litert int8").module()
    target = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}.int8.tflite")
    try:
        with warnings.catch_warnings(), atomic_output(target) as partial:
            warnings.simplefilter("ignore")
            prepared = prepare_pt2e(graph, quantizer)
            calibrate_graph(prepared, batches, on_progress)
            converted = convert_pt2e(prepared, fold_quantize=False)  # litert-torch folds the weights itself
            # quant_config makes the converter turn the quantize/dequantize pairs into int8 kernels and int8
            # weights (without it the .tflite keeps float weights and is no smaller)
            litert_torch.convert(converted, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
                str(partial))
    except MvkitError:
        raise
    except Exception as exc:
        raise conversion_error("litert int8", architecture_of(model), exc, None,
                               "Use ONNX or ExecuTorch int8 instead, or report the operator to litert-torch.") from exc
    artifact = Artifact(path=target, format="litert", model_name=source.model_name, labels=labels_of(model),
                        preprocess=source.preprocess, source=str(checkpoint),
                        extra={"batch": 1, "input": "image", "layout": "NCHW", "softmax_in_graph": False,
                               "quantization": "static int8 PT2E (litert-torch quantizer), int8 per-channel symmetric "
                                               "weights, int8 activations, first conv and classifier float",
                               "calibration_images": sum(len(b) for b in batches), "calibration_data": data,
                               "params": sum(p.numel() for p in model.parameters()),
                               **source.inherited_extra()})
    artifact.save()
    return artifact
