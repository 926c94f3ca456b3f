"""OpenVINO IR export: the model after mvkit's graph preparation (`ready_for_openvino`: the rewrites every other
format gets, plus SeparateQKVAttention), traced and converted by OpenVINO's PyTorch frontend with a dynamic batch,
saved as an IR folder `<stem>_openvino/` holding model.xml + model.bin. mvkit's record (labels, Preprocess, ...)
goes into the IR's runtime info, section "mvkit" (embed_openvino), as well as into the sidecar, so the IR describes
itself.

Precisions (`--precision`):
- default: fp32 weights; the CPU plugin computes in its default precision (bf16 on CPUs with AVX-512 BF16 or
  AMX, else f32), except the leading convolutions, kept in f32 (keep_leading_convs_f32). The Predictor reports
  which precision ran.
- fp32: fp32 weights and f32 compute (INFERENCE_PRECISION_HINT f32): exact parity with the checkpoint.
- fp16: weights stored as fp16 (half the file), computed in f32: fp16 weights under bf16 compute agreed with the
  fine-tuned EfficientNet-Lite0 on 98.4% of flowers128 val, in f32 on 99.6%.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.export.graph import conversion_error, ready_for_export, swap_modules
from mvkit.models import architecture_of, preprocess_of

IR_NAME = "model.xml"  # inside the artifact's folder, with model.bin beside it
PRECISIONS = ("default", "fp32", "fp16")

# The convolutions at the stem's resolution carry most of the bf16 error, as they carry the fp16 error in Core ML
# (see mvkit.export.coreml). Measured on flowers128 val (698 photos), agreement with the checkpoint in bf16 with
# none / the first 2 / the first 3 convolutions kept in f32: fine-tuned EfficientNet-Lite0 98.0 / 99.0 / 99.6%,
# MobileViT-XXS (scratch) 99.0 / 99.9 / 99.4%; latency within the noise on MobileViT-S, Lite0 and XXS.
F32_LEADING_CONVS = 3


def from_weights(port) -> bool:
    """Whether an op's input is a constant (weights, a bias), stored as is or in fp16 behind a Convert."""
    node = port.get_source_output().get_node()
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def feeds_residual_add(op) -> bool:
    """Whether the op's output goes into an Add of two activations (a residual connection)."""
    for consumer in (target.get_node() for output in op.outputs() for target in output.get_target_inputs()):
        if consumer.get_type_name() == "Add" and not any(from_weights(port) for port in consumer.inputs()):
            return True
    return False


def keep_leading_convs_f32(ov_model, count: int = F32_LEADING_CONVS) -> list[str]:
    """Mark the first `count` convolutions to run in f32 whatever the inference precision (the mark is saved in
    the IR, as DisablePrecisionConversion); returns their names. It stops before a convolution that feeds a
    residual Add: with that one marked, the CPU plugin (2026.4) failed at inference on MobileNetV3-Large,
    Mobile-Former-96M and MobileViT-XXS ("Convolution node ... is not initialized")."""
    kept = []
    for op in ov_model.get_ordered_ops():
        if len(kept) == count:
            break
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            if feeds_residual_add(op):
                break
            op.get_rt_info()["precise_0"] = ""  # a string here; the IR serializer writes the plugin's attribute
            kept.append(op.get_friendly_name())
    return kept


class SeparateQKVAttention(nn.Module):
    """timm's Attention with the same math, written the way OpenVINO's CPU plugin fuses it best: q, k and v from
    three Linear layers (the rows of timm's one qkv layer; the 1/sqrt(d) scale folded into q's), each reshaped
    by one rank-4 permute (k straight to [B, heads, d, N]), instead of one qkv output split by a rank-5 permute.
    The plugin then fuses each permute into its neighbours, and an int8 IR has no split to reorder between
    precisions. MobileViT-S int8 ran 1.13-1.21x stock OpenVINO, against 1.03-1.16x before (interleaved scratch runs,
    BENCHMARKS.md "Third look"). Written here: neither timm nor OpenVINO has such a switch."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.heads, self.head_dim = attention.num_heads, attention.head_dim
        width = self.heads * self.head_dim
        weight, bias = attention.qkv.weight.detach(), attention.qkv.bias
        self.q, self.k, self.v = (nn.Linear(attention.qkv.in_features, width, bias=bias is not None) for _ in range(3))
        for index, linear in enumerate((self.q, self.k, self.v)):
            rows = slice(index * width, (index + 1) * width)
            scale = attention.scale if linear is self.q else 1.0
            linear.weight.data = weight[rows] * scale
            if bias is not None:
                linear.bias.data = bias.detach()[rows] * scale
        self.proj = attention.proj

    @staticmethod
    def takes(module: nn.Module) -> bool:
        """timm's plain Attention: no q/k norms, no output norm or gate (what MobileViT's transformer uses)."""
        from timm.layers.attention import Attention

        return (type(module) is Attention and getattr(module, "gate", None) is None
                and all(isinstance(getattr(module, name, nn.Identity()), nn.Identity)
                        for name in ("q_norm", "k_norm", "norm")))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("SeparateQKVAttention takes no mask (MobileViT's attention has none)")
        batch, tokens, _ = x.shape
        heads = (batch, tokens, self.heads, self.head_dim)
        q = self.q(x).reshape(heads).permute(0, 2, 1, 3)
        k_t = self.k(x).reshape(heads).permute(0, 2, 3, 1)
        v = self.v(x).reshape(heads).permute(0, 2, 1, 3)
        x = (q @ k_t).softmax(dim=-1) @ v
        return self.proj(x.permute(0, 2, 1, 3).reshape(batch, tokens, self.heads * self.head_dim))


def ready_for_openvino(model: nn.Module, size: int) -> nn.Module:
    """mvkit's graph preparation for every format, then the attention written as SeparateQKVAttention."""
    ready = ready_for_export(model, size)
    swap_modules(ready, SeparateQKVAttention.takes, SeparateQKVAttention)
    return ready


def convert(model: nn.Module, fmt: str = "openvino"):
    """The checkpoint's model as an ov.Model with a dynamic batch, after mvkit's graph preparation."""
    import openvino as ov

    size = preprocess_of(model).size
    ready = ready_for_openvino(model, size)
    # Traced, not from a torch.export program: on MobileViT-S (256 px, one interleaved scratch run) the IR converted
    # from an ExportedProgram with a dynamic batch ran in 17.6 ms, the traced one in 14.2 ms (stock timm: 15.1).
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            converted = ov.convert_model(ready, example_input=torch.zeros(1, 3, size, size),
                                         input=[ov.PartialShape([-1, 3, size, size])])  # only the batch is free
    except Exception as exc:
        raise conversion_error(fmt, architecture_of(model), exc, None,
                               "Export ONNX or ExecuTorch instead, or report the operator to OpenVINO.") from exc
    converted.inputs[0].get_tensor().set_names({"image"})
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted


def embed_openvino(folder: Path, record: dict[str, str]) -> None:
    """The mvkit record in the IR's runtime info, section "mvkit" (read back with get_rt_info(["mvkit", key])).
    The IR is saved beside and swapped in: the one read keeps its .bin mapped while it lives."""
    import openvino as ov

    folder = Path(folder)
    ov_model = ov.Core().read_model(str(folder / IR_NAME))
    for key, value in record.items():
        ov_model.set_rt_info(value, ["mvkit", key])
    fresh = folder.with_name(folder.name + ".described")
    save_ir(ov_model, fresh)
    del ov_model
    for written in fresh.iterdir():
        written.replace(folder / written.name)
    fresh.rmdir()


def save_ir(ov_model, folder: Path, fp16_weights: bool = False) -> Path:
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(folder / IR_NAME), compress_to_fp16=fp16_weights)
    return folder / IR_NAME


def export_openvino(model: nn.Module, path: Path, precision: str = "default") -> dict[str, Any]:
    ov_model = convert(model)
    kept = keep_leading_convs_f32(ov_model) if precision == "default" else []
    save_ir(ov_model, Path(path), fp16_weights=precision == "fp16")
    return {"input": "image", "output": "logits", "softmax_in_graph": False, "dynamic_batch": True,
            "ir": IR_NAME, "precision": precision, "weights": "fp16" if precision == "fp16" else "fp32",
            "inference_precision": "default" if precision == "default" else "f32",
            "f32_convs": kept}
