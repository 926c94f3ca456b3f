"""What a .mlpackage holds, read from its protobuf spec with coremltools' pure-Python classes (works on Linux):
the input kind and its enumerated sizes, the outputs, the class labels, the ops and the weight dtypes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mvkit.coreml import proto
from mvkit.errors import MvkitError

COMPRESSION_OPS = ("constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_sparse_to_dense",
                   "constexpr_blockwise_shift_scale", "constexpr_cast")


@dataclass
class PackageSummary:
    input_name: str
    input_kind: str  # "imageType" for Vision, "multiArrayType" for a raw tensor
    color_space: str | None
    sizes: list[int]  # square sides the input accepts
    outputs: list[str]
    labels: list[str]
    opset: str
    op_counts: dict[str, int] = field(default_factory=dict)
    weight_dtypes: dict[str, int] = field(default_factory=dict)  # dtype of weight tensors (rank >= 2) -> count
    compression_ops: dict[str, int] = field(default_factory=dict)
    image_scale: float | None = None
    image_bias: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def color_space(image) -> str:
    """An ImageFeatureType's colour space by name."""
    return {10: "GRAYSCALE", 20: "RGB", 30: "BGR"}.get(image.colorSpace, str(image.colorSpace))


def image_sides(image) -> list[int]:
    """The square sides an ImageFeatureType accepts: its enumerated sizes, else its one size."""
    return [s.width for s in image.enumeratedSizes.sizes] or [image.width]


def _labels(block) -> list[str]:
    for op in block.operations:
        if op.type == "classify":
            values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
            return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []


def _image_preprocessing(block, input_name: str) -> tuple[float | None, list[float]]:
    """ImageType scale/bias become a `mul` and an `add` on the input at the top of the program."""
    import numpy as np

    consts = {op.outputs[0].name: op.attributes["val"] for op in block.operations if op.type == "const"}

    def value(name):
        tensor = consts[name].immediateValue.tensor
        data = tensor.floats.values or tensor.doubles.values
        if not data and tensor.bytes.values:
            data = np.frombuffer(tensor.bytes.values, dtype=np.float16).astype(float).tolist()
        return [float(v) for v in data]

    scale, bias, current = None, [], input_name
    for op in block.operations[:40]:
        names = {key: arg.arguments[0].name for key, arg in op.inputs.items() if arg.arguments}
        if current not in names.values():
            continue
        other = [n for n in names.values() if n != current and n in consts]
        if op.type == "mul" and other and scale is None:
            scale = value(other[0])[0]
        elif op.type == "add" and other and not bias:
            bias = value(other[0])
        elif op.type != "cast":
            break
        current = op.outputs[0].name
    return scale, bias


def read_package(path: Path | str) -> PackageSummary:
    path = Path(path)
    if not (path / "Manifest.json").exists():
        raise MvkitError(f"{path} is not a Core ML package (no Manifest.json)")
    spec = load_spec(path)
    if spec.WhichOneof("Type") != "mlProgram":
        raise MvkitError(f"{path} is a {spec.WhichOneof('Type')} model, not an ML program")
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    first = spec.description.input[0]
    kind = first.type.WhichOneof("Type")
    color, sizes = None, []
    if kind == "imageType":
        image = first.type.imageType
        color, sizes = color_space(image), image_sides(image)
    weight_dtypes: Counter = Counter()
    for op in block.operations:
        if op.type == "const" and "val" in op.attributes:
            tensor_type = op.attributes["val"].type.tensorType
            if tensor_type.rank >= 2:
                weight_dtypes[proto("MIL_pb2").DataType.Name(tensor_type.dataType)] += 1
    counts = Counter(op.type for op in block.operations)
    scale, bias = _image_preprocessing(block, first.name)
    return PackageSummary(
        input_name=first.name, input_kind=kind, color_space=color, sizes=sizes,
        outputs=[o.name for o in spec.description.output], labels=_labels(block), opset=function.opset,
        op_counts=dict(counts), weight_dtypes=dict(weight_dtypes),
        compression_ops={op: counts[op] for op in COMPRESSION_OPS if counts.get(op)},
        image_scale=scale, image_bias=bias)


def spec_file(package: Path) -> Path:
    """The protobuf spec inside a .mlpackage, as its Manifest.json names it."""
    manifest = json.loads((Path(package) / "Manifest.json").read_text())
    entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    return Path(package) / "Data" / entry["path"]


def load_spec(package: Path | str):
    """The package's Model spec (coremltools.utils.load_spec does the same after importing all of coremltools)."""
    spec = proto("Model_pb2").Model()
    spec.ParseFromString(spec_file(Path(package)).read_bytes())
    return spec


def embed_coreml(package: Path, record: dict[str, str]) -> None:
    """The mvkit record as the model's user-defined metadata (Swift: MLModel.modelDescription.metadata[
    .creatorDefinedKey]; coremltools: MLModel.user_defined_metadata), beside the classifier's own labels. JSON
    values: ImageNet labels contain commas, and an app reads them with JSONSerialization / json.loads."""
    path = spec_file(package)
    spec = load_spec(package)
    spec.description.metadata.userDefined.update(record)
    path.write_bytes(spec.SerializeToString())


def inspect_coreml(package: Path):
    from mvkit.metadata import FileFacts

    spec = load_spec(package)
    array_types = proto("Model_pb2").ArrayFeatureType.ArrayDataType

    def signature(features):
        found = []
        for feature in features:
            kind = feature.type.WhichOneof("Type")
            if kind == "imageType":
                image = feature.type.imageType
                found.append({"name": feature.name, "shape": [1, 3, image.height, image.width],  # the default size
                              "sizes": image_sides(image),
                              "dtype": f"image {color_space(image)}"})
            elif kind == "multiArrayType":
                array = feature.type.multiArrayType
                found.append({"name": feature.name, "shape": list(array.shape),
                              "dtype": array_types.Name(array.dataType).lower()})
            else:
                found.append({"name": feature.name, "shape": None, "dtype": kind})
        return found

    return FileFacts(dict(spec.description.metadata.userDefined), signature(spec.description.input),
                     signature(spec.description.output))
