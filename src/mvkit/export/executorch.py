"""ExecuTorch export: a .pte program with the XNNPACK delegate (PyTorch's mobile runtime since the lite
interpreter was deprecated), batch 1, float32; int8 programs come from PT2E quantization (mvkit.compress.pt2e).

Attention is exported as plain matmul + softmax (timm's fused_attn=False, same math): XNNPACK does not take
fused SDPA, and leaving it outside the delegate made MobileViT 1.5-2.5x slower here. LayerNorm is written
out as means over the last two axes of a 4-D view, the one mean XNNPACK takes (XnnpackLayerNorm): as
native_layer_norm it stayed outside the delegate and cut MobileViT-S into 49 pieces. timm's attention is
written in 3-D ops for the same reason (for_xnnpack).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvkit.errors import MvkitError
from mvkit.export.graph import capture, conversion_error, ready_for_export, swap_modules
from mvkit.models import architecture_of, preprocess_of


class XnnpackLayerNorm(nn.Module):
    """nn.LayerNorm over the last axis, the same math in ops XNNPACK delegates: mean over (-1, -2) of a
    [rows, tokens, channels, 1] view, subtract, square, rsqrt. Written here: ExecuTorch's XNNPACK partitioner
    takes neither native_layer_norm nor a mean over one axis."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x4 = x.reshape(-1, shape[-2], shape[-1], 1)
        centred = x4 - x4.mean((-1, -2), keepdim=True)
        variance = (centred * centred).mean((-1, -2), keepdim=True)
        y = (centred * torch.rsqrt(variance + self.eps)).reshape(shape)
        if self.weight is not None:
            y = y * self.weight
        return y + self.bias if self.bias is not None else y


def layer_norms_for_xnnpack(model: nn.Module) -> list[str]:
    """Swap (in place) every nn.LayerNorm over the last axis for XnnpackLayerNorm; returns their names (int8
    keeps them float: statistics in int8 would lose small variances)."""
    return swap_modules(model, lambda m: type(m) is nn.LayerNorm and len(m.normalized_shape) == 1, XnnpackLayerNorm)


def _attention_in_3d(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                     is_causal: bool = False) -> torch.Tensor:
    """timm's Attention (fused_attn=False) with the same math in 3-D ops: q, k, v sliced from the qkv output
    and batched matmuls over batch x heads. unbind's squeeze and a 4-D matmul's expand stay outside the XNNPACK
    delegate, which cut MobileViT into pieces. Written here: timm has no such option."""
    if attn_mask is not None or is_causal:
        raise MvkitError("ExecuTorch export: attention with a mask is not supported by mvkit's 3-D rewrite")
    B, N, _ = x.shape
    heads, width = self.num_heads, self.head_dim
    qkv = self.qkv(x)

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # [B, N, heads*width] -> [B*heads, N, width]
        return t.reshape(B, N, heads, width).transpose(1, 2).reshape(B * heads, N, width)

    q, k, v = (split_heads(qkv[..., i * heads * width:(i + 1) * heads * width]) for i in range(3))
    attention = self.attn_drop(torch.bmm(q * self.scale, k.transpose(1, 2)).softmax(dim=-1))
    x = torch.bmm(attention, v).reshape(B, heads, N, width).transpose(1, 2).reshape(B, N, heads * width)
    return self.proj_drop(self.proj(self.norm(x)))


def for_xnnpack(model: nn.Module) -> list[str]:
    """Rewrite (in place, same math) what XNNPACK would leave outside its delegate: LayerNorms (see
    XnnpackLayerNorm) and timm's plain attention. Returns the LayerNorms' names (int8 keeps them float)."""
    from timm.models.vision_transformer import Attention

    for module in model.modules():
        plain = (type(module) is Attention and isinstance(module.q_norm, nn.Identity)
                 and isinstance(module.k_norm, nn.Identity) and getattr(module, "gate", None) is None)
        if plain:
            module.forward = types.MethodType(_attention_in_3d, module)
    return layer_norms_for_xnnpack(model)


def ready_for_xnnpack(model: nn.Module, size: int) -> tuple[nn.Module, list[str]]:
    """ready_for_export plus the XNNPACK rewrites, so fp32 and int8 programs are captured from the same graph:
    (the model copy, the names of its LayerNorms)."""
    ready = ready_for_export(model, size)
    return ready, for_xnnpack(ready)


def lower_to_pte(program: torch.export.ExportedProgram, path: Path, model_name: str) -> dict[str, Any]:
    """Lower an exported program to XNNPACK and write the .pte; reports how much of the graph was delegated."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        delegated = sum(1 for node in edge.exported_program().graph.nodes
                        if node.op == "call_function" and "executorch_call_delegate" in str(node.target))
        left = sorted({getattr(node.target, "__name__", str(node.target)).removeprefix("aten.").split(".")[0]
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


def export_executorch(model: nn.Module, path: Path) -> dict[str, Any]:
    size = preprocess_of(model).size
    ready, _ = ready_for_xnnpack(model, size)
    program = capture(ready, torch.zeros(1, 3, size, size), fmt="executorch")
    return lower_to_pte(program, path, architecture_of(model))


def embed_executorch(path: Path, record: dict[str, str]) -> None:
    """The mvkit record as constant methods of the program, one per key (`labels`, `preprocess`, ...), each
    returning its string: an app lists them with Program.method_names and runs them like `forward`.
    Written here: ExecuTorch adds constant methods only while lowering (to_edge's constant_methods), so a finished
    .pte is read and written again with its own serializer, the new methods appended."""
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary
    from executorch.exir.schema import Chain, ContainerMetadata, EValue, ExecutionPlan, String
    from executorch.extension.pytree import tree_flatten

    pte = deserialize_pte_binary(Path(path).read_bytes())
    plans = [plan for plan in pte.program.execution_plan if plan.name not in record]
    for name, value in record.items():
        _, spec = tree_flatten(value)
        plans.append(ExecutionPlan(
            name=name, values=[EValue(String(value))], inputs=[], outputs=[0],
            chains=[Chain(inputs=[], outputs=[], instructions=[], stacktrace=None)], operators=[], delegates=[],
            non_const_buffer_sizes=[0], container_meta_type=ContainerMetadata("", spec.to_str())))
    pte.program.execution_plan = plans
    Path(path).write_bytes(bytes(serialize_pte_binary(pte, extract_delegate_segments=bool(pte.program.segments))))


SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 15: "bfloat16"}  # c10


def inspect_executorch(path: Path):
    from executorch.runtime import Runtime

    from mvkit.metadata import KEYS, FileFacts

    program = Runtime.get().load_program(Path(path))
    metadata = {key: str(program.load_method(key).execute([])[0]) for key in KEYS if key in program.method_names}
    meta = program.metadata("forward")

    def signature(count, tensor_meta, prefix):
        return [{"name": f"{prefix}{i}", "shape": list(tensor_meta(i).sizes()),
                 "dtype": SCALAR_TYPES.get(int(tensor_meta(i).dtype()), str(tensor_meta(i).dtype()))}
                for i in range(count)]

    return FileFacts(metadata, signature(meta.num_inputs(), meta.input_tensor_meta, "input"),
                     signature(meta.num_outputs(), meta.output_tensor_meta, "output"))
