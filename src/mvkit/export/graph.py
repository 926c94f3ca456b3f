"""What every graph-based exporter (Core ML, ExecuTorch, PT2E quantization) shares: a model made ready for
capture, the torch.export call, and conversion errors turned into a message naming operator and layer.
"""

from __future__ import annotations

import copy
import re
import types
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mvkit.errors import MvkitError

# The network's total stride: feature maps stay integer-sized (and TF "same" padding stays constant) only
# for input sides that are multiples of it.
TOTAL_STRIDE = 32


class StaticSamePadConv2d(nn.Module):
    """A TF-"same" convolution with its padding fixed. timm's Conv2dSame computes the padding from the input
    size at run time (a `max` over symbolic sizes that Core ML cannot convert); for inputs that are multiples
    of the total stride the padding is the same at every size, so it is computed once. Written here because
    timm has no such switch for an already-built model."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__()
        self.conv = conv
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pads)
        return F.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride, 0, self.conv.dilation, self.conv.groups)


def fix_same_padding(model: nn.Module, size: int) -> int:
    """Replace timm's dynamic-padding Conv2dSame layers by fixed padding measured at `size`; returns how many."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    inputs: dict[str, tuple[int, int]] = {}
    hooks = [module.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, module in model.named_modules() if isinstance(module, Conv2dSame)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    for name, (height, width) in inputs.items():
        conv = model.get_submodule(name)
        pads = pad_same_arg([height, width], conv.kernel_size, conv.stride, conv.dilation)  # timm's own rule
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child,
                StaticSamePadConv2d(conv, tuple(pads)))
    return len(inputs)


def swap_modules(model: nn.Module, wanted: Callable[[nn.Module], bool],
                 replacement: Callable[[nn.Module], nn.Module]) -> list[str]:
    """Replace (in place) every submodule for which `wanted` is true by `replacement(submodule)`; returns the
    replaced modules' names. The exporters use it to write layers in ops their runtime takes."""
    swapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if wanted(child):
                setattr(module, child_name, replacement(child))
                swapped.append(f"{name}.{child_name}" if name else child_name)
    return swapped


def _tiled(side, patch: int):
    """The side rounded up to whole patches, in integers: timm's math.ceil(side / patch) puts a float division into
    a graph exported for several sizes, which Core ML's converter refuses (a concat of ints and doubles)."""
    return (side + patch - 1) // patch * patch


def _mobilevit_v2_forward(self, x: torch.Tensor) -> torch.Tensor:
    """timm's MobileVitV2Block.forward, the same math with the patch grid in integers (see _tiled)."""
    B, C, H, W = x.shape
    patch_h, patch_w = self.patch_size
    new_h, new_w = _tiled(H, patch_h), _tiled(W, patch_w)
    n_h, n_w = new_h // patch_h, new_w // patch_w
    if new_h != H or new_w != W:
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
    x = self.conv_1x1(self.conv_kxk(x))
    C, P = x.shape[1], patch_h * patch_w
    # [B, C, H, W] -> [B, C, P, N] in steps of rank <= 5, the most Core ML takes (timm's one step is rank 6):
    # [B*C*n_h, p_h, n_w, p_w] -> [B*C*n_h, p_h, p_w, n_w] -> [B, C, n_h, P, n_w] -> [B, C, P, n_h, n_w]
    x = x.reshape(B * C * n_h, patch_h, n_w, patch_w).transpose(2, 3)
    x = x.reshape(B, C, n_h, P, n_w).transpose(2, 3).reshape(B, C, P, n_h * n_w)
    x = self.norm(self.transformer(x))
    # and back, the same steps in reverse
    x = x.reshape(B, C, P, n_h, n_w).transpose(2, 3)
    x = x.reshape(B * C * n_h, patch_h, patch_w, n_w).transpose(2, 3)
    return self.conv_proj(x.reshape(B, C, new_h, new_w))


def _linear_self_attention(self, x: torch.Tensor) -> torch.Tensor:
    """timm's LinearSelfAttention (MobileViTv2) on itself, the same math with the context vector broadcast
    instead of expand_as: Core ML's converter builds expand's shape from a float where the sides vary."""
    query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)
    context = (key * F.softmax(query, dim=-1)).sum(dim=-1, keepdim=True)  # [B, d, P, 1]
    return self.out_proj(F.relu(value) * context)


def _mobilevit_forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
    """timm's MobileVitBlock.forward with the same math, but unfold/fold go through channels-last so each
    transpose moves whole rows of C values. timm's two transposes move 2-element rows ([B*C*n_h, p_h, n_w,
    p_w] -> [.., n_w, p_h, ..]): in an int8 ONNX graph those uint8 transposes took 26 of 60 ms of MobileViT-S
    in ONNX Runtime's profiler, so int8 was no faster than float. With this version, int8 ONNX runs 1.21x its
    fp32 (benchmarks/formats_flowers.py --only speed, BENCHMARKS.md). Written here: timm has no such option."""
    shortcut = x
    x = self.conv_1x1(self.conv_kxk(x))
    patch_h, patch_w = self.patch_size
    B, C, H, W = x.shape
    new_h, new_w = _tiled(H, patch_h), _tiled(W, patch_w)
    resized = new_h != H or new_w != W
    if resized:  # as timm: a map that the patches do not tile is resized to one they do, and back after
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    n_h, n_w = new_h // patch_h, new_w // patch_w
    # Core ML allows tensors of rank 5 at most, so the (b, n_h, p_h, n_w, p_w, c) -> (b, p_h, p_w, n_h, n_w, c)
    # move is done in two rank <= 5 steps, each moving whole rows of C (or n_w * C) values:
    # [B, H, W, C] -> [B*n_h, p_h, n_w, p_w, C] -> [B*n_h, p_h, p_w, n_w, C] -> [B, n_h, P, n_w*C]
    # -> [B, P, n_h, n_w*C] -> [B*P, N, C]
    x = x.permute(0, 2, 3, 1).reshape(B * n_h, patch_h, n_w, patch_w, C).transpose(2, 3)
    x = x.reshape(B, n_h, self.patch_area, n_w * C).transpose(1, 2).reshape(B * self.patch_area, n_h * n_w, C)
    x = self.norm(self.transformer(x))
    # and back, the same steps in reverse
    x = x.reshape(B, self.patch_area, n_h, n_w * C).transpose(1, 2)
    x = x.reshape(B * n_h, patch_h, patch_w, n_w, C).transpose(2, 3)
    x = x.reshape(B, new_h, new_w, C).permute(0, 3, 1, 2)
    if resized:
        x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    x = self.conv_proj(x)
    if self.conv_fusion is not None:
        x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
    return x


def ready_for_export(model: nn.Module, size: int) -> nn.Module:
    """A copy in eval mode, the same math written the way phone runtimes run fastest: attention as plain
    matmul + softmax (timm's fused_attn=False: mobile delegates such as XNNPACK take it while fused SDPA
    stays outside them), MobileViT's unfold/fold through channels-last, and fixed "same" padding. Activations
    run out of place: torch.export traces an in-place one (timm's ReLU6, Hardswish) through a slow decomposition,
    about a third of EfficientNet-Lite0's ONNX and Core ML export time, for the same converted graph."""
    from timm.models.mobilevit import LinearSelfAttention, MobileVitBlock, MobileVitV2Block

    # timm's class -> (its method, mvkit's version with the same math)
    rewrites = {MobileVitBlock: ("forward", _mobilevit_forward_channels_last),
                MobileVitV2Block: ("forward", _mobilevit_v2_forward),
                LinearSelfAttention: ("_forward_self_attn", _linear_self_attention)}
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
        if getattr(module, "inplace", None) is True:
            module.inplace = False
        if type(module) in rewrites:
            method, version = rewrites[type(module)]
            setattr(module, method, types.MethodType(version, module))
    fix_same_padding(model, size)
    return model


def capture(model: nn.Module, example: torch.Tensor, dynamic_shapes: Any = None,
            fmt: str = "export") -> torch.export.ExportedProgram:
    """torch.export with a clear error when the model cannot be captured."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"{fmt}: torch.export could not capture {type(model).__name__}: {first_line}") from exc


_OP_PATTERNS = [
    r"Unsupported fx node (\w+)",
    r"Unable to map (\w+)",
    r"convert function for op '(\w+)'",
    r"op '(\w+)' not implemented",
    r"operator (?:aten::)?([\w.]+)",
]


def operator_in(message: str) -> str | None:
    for pattern in _OP_PATTERNS:
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    return None


def layer_of(program: torch.export.ExportedProgram | None, operator: str | None, prefix: str = "") -> str | None:
    """The module path and class that produced the first graph node matching `operator`."""
    if program is None or not operator:
        return None
    key = operator.removeprefix("torch_").removeprefix("aten.").split(".")[0]
    for node in program.graph.nodes:
        if node.op == "call_function" and (key in str(node.target) or key in node.name):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                path = path.removeprefix(prefix)
                kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
                return f"{path or '(top level)'} ({kind_name.rsplit('.', 1)[-1]})"
    return None


class ConversionError(MvkitError):
    """A converter refused the model: the message names the operator and layer where it can."""


def conversion_error(fmt: str, model_name: str, exc: Exception, program: torch.export.ExportedProgram | None,
                     fix: str, prefix: str = "") -> ConversionError:
    """One message with the operator, the layer it came from, the converter's own words and a fix."""
    message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    operator = operator_in(str(exc))
    layer = layer_of(program, operator, prefix)
    where = (f" at operator {operator}" if operator else "") + (f" in layer {layer}" if layer else "")
    return ConversionError(f"{fmt} conversion of {model_name} failed{where}: {type(exc).__name__}: {message}. {fix}")
