"""PyTorch dynamic quantization (the guide's method): int8 weights for nn.Linear layers only, activations
quantized on the fly. Saved as TorchScript, the format that can hold quantized modules.

It is reported honestly: convolutions stay float, so on conv-heavy models (MobileViT's stem and MobileNet
blocks, EfficientNet) it changes little; real int8 speed needs static quantization (`--method ptq`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from mvkit.artifact import Artifact
from mvkit.files import atomic_output
from mvkit.models import architecture_of, labels_of, load_checkpoint, preprocess_of


def quantize_dynamic_linear(checkpoint: Path, out: Path | None = None) -> Artifact:
    """The format table's dynamic entry (TorchScript); what it did is in the artifact's `note`."""
    from torch.ao.quantization import quantize_dynamic
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    model = load_checkpoint(checkpoint)
    linear_types = {type(m) for m in model.modules() if isinstance(m, nn.Linear)}
    # quantize_dynamic matches exact types; timm's heads subclass nn.Linear, so map every subclass too.
    mapping = {**get_default_dynamic_quant_module_mappings(), **{t: DynamicLinear for t in linear_types}}
    total = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {nn.Linear, *linear_types}, dtype=torch.qint8, mapping=mapping)
        size = preprocess_of(model).size
        traced = torch.jit.trace(quantized.eval(), torch.zeros(1, 3, size, size), check_trace=False)
    target = Path(out) if out else checkpoint.with_name(checkpoint.stem + ".dynamic-int8.torchscript.pt")
    with atomic_output(target) as partial:
        torch.jit.save(traced, str(partial))
    share = linear / total
    summary = (f"dynamic int8 quantized {sum(1 for m in model.modules() if isinstance(m, nn.Linear))} Linear layers "
               f"holding {share:.0%} of the weights; convolutions stay float"
               + ("; on this conv-heavy model expect little change in size or speed: use --method ptq" if share < 0.5 else ""))
    artifact = Artifact(path=target, format="torchscript", model_name=architecture_of(model), labels=labels_of(model),
                        preprocess=preprocess_of(model), source=str(checkpoint),
                        extra={"quantization": "dynamic int8 (Linear only)", "linear_weight_share": share,
                               "note": summary})
    artifact.save()
    return artifact
