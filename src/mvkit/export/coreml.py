"""Core ML export: an ML program (.mlpackage) that Vision can run as a classifier.

- Converted from torch.export (coremltools' traced-TorchScript path fails on timm MobileViT under numpy >= 2.4).
- Input `image` is an ImageType; the model's Preprocess is folded in: ImageType scale/bias when the three stds
  are equal, else scale 1/255 and an exact per-channel (x - mean) / std inside the program.
- A softmax and ClassifierConfig labels, so VNCoreMLRequest returns VNClassificationObservations with
  probabilities.
- EnumeratedShapes for several input sides in one program (the guide's 192/224/256 by default, up to the
  model's own size).
- fp16 (default) or fp32 compute; weight compression with ct.optimize.coreml.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from mvkit.coreml import quiet_coremltools
from mvkit.errors import MvkitError
from mvkit.export.graph import TOTAL_STRIDE, capture, conversion_error, ready_for_export
from mvkit.models import architecture_of, labels_of, preprocess_of
from mvkit.models.zoo import fixed_input_size

GUIDE_SIZES = (192, 224, 256)


class CoreMLClassifier(nn.Module):
    """Pixels in [0, 1] (ImageType scale) -> exact per-channel normalisation -> model -> softmax."""

    def __init__(self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        self.model = model
        self.normalise = mean is not None
        if self.normalise:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) * self.inv_std
        return self.model(x).softmax(dim=-1)


def size_multiple(model: nn.Module) -> int:
    """Input sides that can share one program: multiples of the total stride times MobileViT's patch size
    (at 224 MobileViT's last 7x7 map is resized to 8x8 for its 2x2 patches, a resize Core ML cannot make
    depend on the input size)."""
    patch = max((max(m.patch_size) for m in model.modules()
                 if isinstance(getattr(m, "patch_size", None), tuple) and hasattr(m, "patch_area")), default=1)
    return TOTAL_STRIDE * patch


def choose_sizes(model: nn.Module, sizes: Sequence[int] | None) -> tuple[list[int], str | None]:
    """The sizes to enumerate, and a note when the guide's defaults were narrowed for this model. The model's
    own size is always among them, and by default no guide size above it. Sides that share one program must be
    multiples of `size_multiple` and at least twice it: torch.export fixes a dimension it sees as 1 (a 1x1 map at
    MobileViT's last stage), so the smallest side can only be exported alone. A one-size model (a ViT) gets its
    size alone."""
    multiple = size_multiple(model)
    own = preprocess_of(model).size
    fixed = fixed_input_size(model)
    if fixed is not None:  # a ViT: its position embeddings are built for one size
        if sizes and set(int(s) for s in sizes) != {fixed}:
            raise MvkitError(f"--sizes {','.join(map(str, sizes))}: {architecture_of(model)} takes one input size, "
                             f"{fixed} px (its position embeddings are built for it); leave out --sizes, or train it "
                             "at the size you need")
        return [fixed], None if sizes else f"size {fixed} only: {architecture_of(model)} takes one input size"

    def shareable(side: int) -> bool:
        return side % multiple == 0 and side >= 2 * multiple

    if sizes:
        sizes = sorted(set(int(s) for s in sizes))
        bad = [s for s in sizes if not shareable(s)]
        if len(sizes) > 1 and bad:
            raise MvkitError(
                f"--sizes {','.join(map(str, sizes))}: {architecture_of(model)} can share one Core ML program only "
                f"across sides that are multiples of {multiple} from {2 * multiple} up; {','.join(map(str, bad))} "
                f"{'is' if len(bad) == 1 else 'are'} not. Use e.g. --sizes "
                f"{','.join(str(s) for s in sizes if shareable(s)) or own}, or export that size on its own (--sizes N).")
        return sizes, None
    if not shareable(own):
        return [own], (f"size {own} only: {architecture_of(model)} shares one Core ML program across sides that are "
                       f"multiples of {multiple} from {2 * multiple} up, and {own} (its own size) is not one; "
                       "export another size with --sizes N")
    # never above its own size: upscaling past the size a model trained at costs accuracy, and `mvkit live`
    # never picks such a side, so it would only add shapes to the package
    larger = [s for s in GUIDE_SIZES if s > own]
    unshareable = [s for s in GUIDE_SIZES if s <= own and not shareable(s)]
    chosen = sorted({s for s in GUIDE_SIZES if s <= own and shareable(s)} | {own})
    reasons = []
    if unshareable:
        reasons.append(f"{','.join(map(str, unshareable))} not a multiple of {multiple} for {architecture_of(model)}")
    if larger:
        reasons.append(f"{','.join(map(str, larger))} above the {own} px it was trained at")
    note = (f"sizes {','.join(map(str, chosen))}: left out {'; '.join(reasons)}; export another size with "
            "--sizes N") if reasons else None
    return chosen, note


def image_input(preprocess, sizes: list[int], default: int):
    """ImageType with the normalisation folded in; returns (input, mean, std) where mean/std are what the
    program still has to apply (None when the ImageType does it all)."""
    import coremltools as ct

    shape = (1, 3, sizes[0], sizes[0]) if len(sizes) == 1 else \
        ct.EnumeratedShapes(shapes=[(1, 3, s, s) for s in sizes], default=(1, 3, default, default))
    mean, std = preprocess.mean, preprocess.std
    if max(std) - min(std) < 1e-9:  # one std: Core ML's scalar scale and per-channel bias are exact
        scale = 1.0 / (255.0 * std[0])
        bias = [-m / std[0] for m in mean]
        return ct.ImageType(name="image", shape=shape, scale=scale, bias=bias, color_layout=ct.colorlayout.RGB), None, None
    return ct.ImageType(name="image", shape=shape, scale=1.0 / 255.0, color_layout=ct.colorlayout.RGB), mean, std


def compress(mlmodel, method: str):
    from coremltools.optimize import coreml as cto

    if method == "none":
        return mlmodel
    if method == "int8":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        return cto.linear_quantize_weights(mlmodel, config)
    if method.startswith("palettize"):
        nbits = int(method.removeprefix("palettize"))
        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=nbits, mode="kmeans"))
        return cto.palettize_weights(mlmodel, config)
    if method == "prune50":
        config = cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5))
        return cto.prune_weights(mlmodel, config)
    raise ValueError(f"unknown Core ML compression {method!r}")  # the format table checks it first


# precision "mixed": fp16 except the network's first convolutions. In BN-folded conv nets those carry most of the
# fp16 error: on the fine-tuned EfficientNet-Lite0 (flowers128), rounding only the first depthwise conv's weights
# to fp16 moved probabilities by 0.021 and the stem's by 0.005, every other layer's by < 0.003; keeping both in
# fp32 cut the top-1 flips among the 40 closest calls of the val split from 5 to 1.
FP32_LEADING_CONVS = 2


def compute_precision(precision: str):
    """coremltools' compute_precision for mvkit's --precision."""
    import coremltools as ct

    if precision == "fp32":
        return ct.precision.FLOAT32
    if precision == "fp16":
        return ct.precision.FLOAT16
    convs_seen = 0

    def to_fp16(op) -> bool:  # the fp16 pass visits the ops in program order
        nonlocal convs_seen
        if op.op_type == "conv":
            convs_seen += 1
            return convs_seen > FP32_LEADING_CONVS
        return True

    return ct.transform.FP16ComputePrecision(op_selector=to_fp16)


def check_target(options: dict[str, Any], owner: str) -> None:
    """Compressed weights are iOS 16 ops (constexpr_*): coremltools raises an iOS 15 target to iOS 16 without a
    word, and the package would not load on the iOS 15 devices it was asked for."""
    if options["compression"] != "none" and options["target"] == "iOS15":
        raise MvkitError(f"{owner}: --compress {options['compression']} needs --target iOS16 or later (compressed "
                         "weights are iOS 16 ops); for iOS 15 use --compress none")


def export_coreml(model: nn.Module, path: Path, sizes: Sequence[int] | None = None, precision: str = "fp16",
                  target: str = "iOS16", compression: str = "none") -> dict[str, Any]:
    """Options are checked against the format table (mvkit.formats) before this runs."""
    quiet_coremltools()
    import coremltools as ct

    name, labels, preprocess = architecture_of(model), labels_of(model), preprocess_of(model)
    chosen, note = choose_sizes(model, sizes)
    default = preprocess.size if preprocess.size in chosen else chosen[-1]  # --sizes without the own size
    image, mean, std = image_input(preprocess, chosen, default)
    wrapped = CoreMLClassifier(ready_for_export(model, default), mean, std).eval()
    multiple = size_multiple(model)
    dynamic = None
    if len(chosen) > 1:
        side = multiple * torch.export.Dim("side", min=chosen[0] // multiple, max=chosen[-1] // multiple)
        dynamic = {"x": {2: side, 3: side}}
    program = capture(wrapped, torch.zeros(1, 3, default, default), dynamic, fmt="coreml")
    program = program.run_decompositions({})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # coremltools' version and numpy cast warnings
            mlmodel = ct.convert(
                program, inputs=[image], classifier_config=ct.ClassifierConfig(list(labels)),
                convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                compute_precision=compute_precision(precision),
                compute_units=ct.ComputeUnit.ALL)
            mlmodel = compress(mlmodel, compression)
    except MvkitError:
        raise
    except Exception as exc:
        raise conversion_error("coreml", name, exc, program,
                               "Try a single input size (--sizes N), --precision fp32, or a newer --target; "
                               "if the operator is unsupported, export ONNX or ExecuTorch instead.",
                               prefix="model.") from exc
    mlmodel.short_description = f"{name} image classifier ({len(labels)} classes), exported by mvkit"
    mlmodel.author = "mvkit"
    mlmodel.license = "see the source checkpoint's license"
    mlmodel.version = "1"
    mlmodel.input_description["image"] = (
        f"RGB photo, {'/'.join(map(str, chosen))} px square; resize the shorter side to size / {preprocess.crop_pct:g} "
        "and center-crop (Vision: imageCropAndScaleOption = .centerCrop)")
    mlmodel.save(str(path))
    return {"sizes": chosen, "default_size": default, "precision": precision, "target": target,
            "compression": compression, "normalisation": "in ImageType" if mean is None else "in program",
            "input": "image", "outputs": ["classLabel", "classLabel_probs"], "softmax_in_graph": True,
            **({"note": note} if note else {})}
