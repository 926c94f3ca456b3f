"""Static int8 for ExecuTorch with PT2E: XNNPACK quantizer (int8 per-channel symmetric weights, int8
activations), calibrated on real photos (ptq) or fine-tuned with fake quantization (qat), then lowered to a
.pte with the XNNPACK delegate.

The first convolution and the classifier stay float, as in the ONNX path (see onnx_int8.float_nodes).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mvkit.artifact import Artifact
from mvkit.compress.calibration import calibration_batches
from mvkit.errors import MvkitError, require_extra
from mvkit.files import atomic_output
from mvkit.export.graph import capture
from mvkit.models import architecture_of, labels_of, load_checkpoint, preprocess_of
from mvkit.runtime import load_predictor

Progress = Callable[[int], None] | None
QAT_BATCH = 16


def fuse_conv_clamp(graph: torch.fx.GraphModule) -> None:
    """Quantize a conv followed by ReLU6 (hardtanh) after the clamp, not before it.

    XNNPACK's quantizer fuses conv+ReLU but treats hardtanh as sharing the conv's output observer, so the
    conv output is quantized over its full pre-clamp range (here up to +-150 on EfficientNet-Lite0 for a
    0..6 result: 25x coarser steps, most answers lost). XNNPACK runs conv+clamp as one fused op, so observing
    the clamp's output is both exact and what the phone computes. Written here because the quantizer has no
    pattern for it."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    key = "quantization_annotation"
    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    producers = (torch.ops.aten.conv2d.default, torch.ops.aten.batch_norm.default)
    for node in graph.graph.nodes:
        if node.target not in clamps or not node.args:
            continue
        producer = node.args[0]
        annotation = producer.meta.get(key)
        # conv, or conv + batch_norm as QAT keeps them until convert
        if (producer.target not in producers or len(producer.users) != 1 or annotation is None
                or annotation.output_qspec is None):
            continue
        output_spec, annotation.output_qspec = annotation.output_qspec, None
        node.meta[key] = QuantizationAnnotation(input_qspec_map={}, output_qspec=output_spec, _annotated=True)


def kept_float(model: nn.Module) -> list[str]:
    """Module names that stay float: the first conv and the classifier (see onnx_int8.float_nodes for why)."""
    cfg = getattr(model, "pretrained_cfg", {})
    names = []
    for key in ("first_conv", "classifier"):
        value = cfg.get(key)
        names += [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)] if value else []
    return names  # distilled models name two classifiers: ('head', 'head_dist')


def in_modules(node: torch.fx.Node, names: list[str]) -> bool:
    """Whether a captured graph node comes from one of the named modules (or a submodule of one)."""
    paths = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
    return any(path == name or path.startswith(name + ".") for path in paths for name in names)


def load_float_checkpoint(checkpoint: Path, purpose: str) -> tuple[Path, Artifact, nn.Module]:
    """(path, its Artifact, the model) for an mvkit checkpoint; any other artifact is refused with `purpose`."""
    checkpoint = Path(checkpoint)
    source = Artifact.load(checkpoint)
    if source.format != "safetensors":
        raise MvkitError(f"{checkpoint} is a {source.format} artifact; {purpose} starts from an mvkit "
                         "checkpoint (.safetensors)")
    return checkpoint, source, load_checkpoint(checkpoint)


def _quantizer(model: nn.Module, is_qat: bool, also_float: list[str] = ()):
    require_extra("executorch", ("executorch", "torchao"), "PT2E int8 for ExecuTorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    class ClampFusingXNNPACKQuantizer(XNNPACKQuantizer):
        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            graph = super().annotate(graph)
            fuse_conv_clamp(graph)
            return graph

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    quantizer = ClampFusingXNNPACKQuantizer().set_global(_histogram_activations(config) if is_qat else config)
    kept = kept_float(model) + list(also_float)

    def quantized(node) -> bool:
        return not in_modules(node, kept)

    quantizer.set_filter_function(quantized)
    return quantizer


def _histogram_activations(config):
    """XNNPACK's QAT config with PTQ's activation ranges: a histogram observer (the range that minimises the
    quantization error) inside the fake quantizer, instead of a moving average of each photo's min and max.
    With the moving average, calibration alone agreed with the float MobileViT-XXS on 95.9% of flowers128 val
    (PTQ: 98.3%), and one epoch of QAT could not win that back. The ranges are frozen after calibration
    (calibrate_activation_ranges); weights keep their per-channel observers, which follow the training."""
    from torchao.quantization.pt2e import FakeQuantize, HistogramObserver

    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=FakeQuantize.with_args(
        observer=HistogramObserver, eps=2**-12))
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def calibrate_activation_ranges(prepared: torch.fx.GraphModule, batches: list[np.ndarray]) -> None:
    """Set the activation ranges of a QAT graph from the calibration photos, as PTQ does, then freeze them.

    Each activation fake quantizer's histogram observer sees the float activations (fake quantization off);
    the range is computed once at the end. FakeQuantize would compute it after every photo: the histogram's
    range search then made quantizing MobileViT-XXS take 649 s instead of 181 s."""
    from torchao.quantization.pt2e import FakeQuantize, HistogramObserver, disable_fake_quant, enable_fake_quant

    quantizers = [module for module in prepared.modules()
                  if isinstance(module, FakeQuantize) and isinstance(module.activation_post_process, HistogramObserver)]
    hooks = []
    for quantizer in quantizers:
        quantizer.disable_observer()
        hooks.append(quantizer.register_forward_pre_hook(
            lambda module, args: module.activation_post_process(args[0].detach())))
    prepared.apply(disable_fake_quant)
    try:
        calibrate_graph(prepared, batches, None, batch_one=False)
    finally:
        for hook in hooks:
            hook.remove()
        prepared.apply(enable_fake_quant)
    for quantizer in quantizers:
        scale, zero_point = quantizer.calculate_qparams()
        quantizer.scale.resize_(scale.shape).copy_(scale)
        quantizer.zero_point.resize_(zero_point.shape).copy_(zero_point)


def calibrate_graph(prepared: torch.fx.GraphModule, batches: list[np.ndarray], on_progress: Progress,
                    batch_one: bool = True) -> None:
    """Run the calibration photos through a PT2E-prepared graph: one at a time if it was captured for batch 1."""
    with torch.no_grad():
        for batch in batches:
            if batch_one:
                for image in batch:
                    prepared(torch.from_numpy(image[None]))
            else:
                prepared(torch.from_numpy(batch))
            if on_progress:
                on_progress(len(batch))


def fold_batch_norms(graph: torch.fx.GraphModule) -> None:
    """Fold each BatchNorm into the conv before it, with the BatchNorm's own eps, as PTQ's prepare_pt2e does.

    QAT then trains the folded weights, BatchNorm frozen (see _qat_finetune). torchao's own QAT conv+BN pattern
    (prepare_qat_pt2e on a graph captured in training mode) folds with eps 1e-5 whatever the layer says
    ("TODO: allow setting eps" in torchao 0.18 qat_utils.py). EfficientNet-Lite0's BatchNorms use 1e-3, so channels
    with a small running variance were scaled wrongly: untrained QAT agreed with a Lite0 checkpoint on 85% of
    flowers128 val where PTQ agreed on 94%. Graph captured in eval mode."""
    from mvkit.compat import fuse_conv_bn

    fuse_conv_bn(graph)


def _qat_finetune(prepared: torch.fx.GraphModule, teacher: nn.Module, data: str, source: Artifact, epochs: int,
                  lr: float, on_progress: Progress) -> None:
    """A short fine-tune of the fake-quantized graph on the training photos, taught by the float model itself:
    the loss is the KL divergence from the float model's predictions on the same augmented photo, so QAT
    recovers what quantization changed instead of moving on to new answers (with the label loss and
    moving-average ranges, one epoch changed 6.6% of the val answers of a fine-tuned EfficientNet-Lite0 and lost
    1.3 points of top-1).
    Batches of 16 photos (the QAT graph is captured with a dynamic batch). BatchNorm is frozen, folded into the
    convs before training (fold_batch_norms), and frozen BN is the usual way to end a QAT fine-tune."""
    from mvkit.data.datasets import load_data_as_trained
    from mvkit.train.batches import train_transform
    from mvkit.train.state import seeded

    preprocess = preprocess_of(teacher)
    dataset = copy.copy(load_data_as_trained(data, source).train)
    dataset.transform = train_transform(preprocess.size, preprocess.interpolation, 0.5)
    optimizer = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=QAT_BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    # augmentation draws from the global generators (torch's, Python's): seeded here, the caller's restored after
    with seeded(0):
        _qat_epochs(prepared, teacher, loader, preprocess, optimizer, epochs, on_progress)


def _qat_epochs(prepared, teacher, loader, preprocess, optimizer, epochs: int, on_progress: Progress) -> None:
    from mvkit.train.batches import model_input, to_unit_range
    from mvkit.train.losses import teacher_loss

    for _ in range(epochs):
        for images, _ in loader:
            pixels = model_input(to_unit_range(images), preprocess)
            with torch.no_grad():
                target = teacher(pixels)
            teacher_loss(prepared(pixels), target).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if on_progress:
                on_progress(len(images))


def prepare_int8_graph(model: nn.Module, method: str, batches: list[np.ndarray],
                       on_progress: Progress = None) -> torch.fx.GraphModule:
    """The model captured for XNNPACK and prepared by PT2E. ptq: observers calibrated on `batches`, captured
    for batch 1. qat: fake-quantized, BatchNorms folded, activation ranges set from `batches` and frozen,
    captured with a dynamic batch, ready to train. `model` may be changed (see ready_for_xnnpack)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    from mvkit.export.executorch import ready_for_xnnpack

    if method not in ("ptq", "qat"):
        raise MvkitError(f"PT2E method must be ptq or qat, not {method!r}")
    size = preprocess_of(model).size
    ready, layer_norms = ready_for_xnnpack(model, size)
    quantizer = _quantizer(model, is_qat=method == "qat", also_float=layer_norms)
    example = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "ptq":
            prepared = prepare_pt2e(capture(ready, example, fmt="executorch int8").module(), quantizer)
            calibrate_graph(prepared, batches, on_progress)
            return prepared
        # trained in batches; an example of 2, as export specialises a batch of 1
        batch = torch.export.Dim("batch", min=1, max=1024)
        graph = capture(ready, example.expand(2, -1, -1, -1), dynamic_shapes=({0: batch},),
                        fmt="executorch int8").module()
        fold_batch_norms(graph)
        prepared = prepare_qat_pt2e(graph, quantizer)
        calibrate_activation_ranges(prepared, batches)  # start where PTQ ends
        return prepared


def quantize_executorch(checkpoint: Path, data: str, count: int = 256, method: str = "ptq", qat_epochs: int = 1,
                        qat_lr: float = 1e-5, out: Path | None = None, on_progress: Progress = None) -> Artifact:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from mvkit.export.executorch import lower_to_pte

    checkpoint, source, model = load_float_checkpoint(checkpoint, "PT2E quantization")
    size = preprocess_of(model).size
    # QAT's teacher: its own copy, as the captured graph may share parameter tensors with `model`
    teacher = copy.deepcopy(model).eval() if method == "qat" else None
    batches = calibration_batches(load_predictor(checkpoint), data, count)
    prepared = prepare_int8_graph(model, method, batches, on_progress)  # calibration progress: ptq only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "qat":
            _qat_finetune(prepared, teacher, data, source, qat_epochs, qat_lr, on_progress)
        converted = convert_pt2e(prepared)
        program = capture(converted, torch.zeros(1, 3, size, size), fmt="executorch int8")
    target = Path(out) if out else checkpoint.with_name(f"{checkpoint.stem}.{method}-int8.pte")
    with atomic_output(target) as partial:
        extra = lower_to_pte(program, partial, architecture_of(model))
    description = ("static int8 PT2E (XNNPACK quantizer), int8 per-channel symmetric weights, int8 activations, "
                   "first conv, classifier and layer norms float"
                   + (f", quantization-aware fine-tuned {qat_epochs} epoch(s) from PTQ's ranges, taught by the float model"
                      if method == "qat" else ""))
    artifact = Artifact(path=target, format="executorch", model_name=source.model_name, labels=labels_of(model),
                        preprocess=source.preprocess, source=str(checkpoint),
                        extra={**extra, "quantization": description, "method": method,
                               "calibration_images": sum(len(b) for b in batches), "calibration_data": data,
                               "params": sum(p.numel() for p in model.parameters()),
                               **source.inherited_extra()})
    artifact.save()
    return artifact


def quantize_executorch_ptq(checkpoint: Path, data: str, count: int = 256, out: Path | None = None,
                            on_progress: Progress = None) -> Artifact:
    """The format table's ExecuTorch ptq entry."""
    return quantize_executorch(checkpoint, data, count, method="ptq", out=out, on_progress=on_progress)


def quantize_executorch_qat(checkpoint: Path, data: str, count: int = 256, out: Path | None = None,
                            on_progress: Progress = None, epochs: int = 1, lr: float = 1e-5) -> Artifact:
    """The format table's ExecuTorch qat entry."""
    return quantize_executorch(checkpoint, data, count, method="qat", qat_epochs=epochs, qat_lr=lr, out=out,
                               on_progress=on_progress)
