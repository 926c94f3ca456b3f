"""The format table: one row per artifact format carries what every stage needs (as in Ultralytics' exporter).

`export`, `quantize`, `predict`, `verify`, `bench` and `demo` iterate FORMATS; a new format is one row here
plus its module. Converters and runtimes are named as "module:function" strings and imported only when used,
so a machine without an extra never imports it.

A row's options are the only keywords its exporter or int8 method accepts: anything else is refused by name
before any work starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from mvkit.errors import MvkitError, missing_modules, require_extra


@dataclass(frozen=True)
class Option:
    name: str  # the converter's keyword
    default: Any
    flag: str  # the CLI flag that sets it
    choices: tuple[Any, ...] | None = None
    in_file_name: bool = False  # a value other than the default is added to the file name (model.fp32.mlpackage)
    rule: tuple[Callable[[Any], bool], str] | None = None  # (allowed, what it must be) for a number

    def check(self, value: Any, owner: str) -> Any:
        if self.choices is not None and value not in self.choices:
            raise MvkitError(f"{owner}: {self.flag} must be one of {', '.join(map(str, self.choices))}, not {value!r}")
        if self.rule is not None and not self.rule[0](value):
            raise MvkitError(f"{owner}: {self.flag} must be {self.rule[1]}, not {value!r}")
        return value


@dataclass(frozen=True)
class Int8Method:
    function: str  # "module:function"(source, [data, count, on_progress,] out=None, **options) -> Artifact
    calibrated: bool  # takes real photos (--calib)
    description: str
    options: tuple[Option, ...] = ()
    sources: tuple[str, ...] = ("safetensors",)  # artifact formats it starts from


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str  # what runs it, for tables
    loader: str  # "module:function"(artifact) -> Predictor
    runtime_modules: tuple[str, ...]  # what the Predictor imports
    extra: str | None = None  # the pip extra that installs its converter and runtime
    exporter: str | None = None  # "module:function"(model, path, **options) -> sidecar extras; None: not exported
    export_modules: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    int8: dict[str, Int8Method] = field(default_factory=dict)
    # verify: a structure check run before the numbers, "module:function"(path) -> (summary, problems)
    structure_check: str | None = None
    # the input sides it runs at: "any" (eager models), "enumerated" (the sizes its sidecar lists), or "fixed"
    input_sizes: str = "fixed"
    # the file's self-description (mvkit.metadata): "module:function"(path, record) writes the record into the
    # file in the format's own convention; "module:function"(path) -> FileFacts reads it back with the
    # format's runtime, with the file's inputs and outputs
    embed: str | None = None
    inspect: str | None = None
    # "module:function"(options, owner): refuses a combination of options the converter would not honour
    options_rule: str | None = None
    aliases: tuple[str, ...] = ()  # other names users type for it (Ultralytics' and the file suffix's)

    def can_export(self) -> bool:
        return self.exporter is not None and not missing_modules(self.export_modules)

    def can_run(self) -> bool:
        return not missing_modules(self.runtime_modules)

    def require_export(self) -> None:
        require_extra(self.extra, self.export_modules, f"{self.name} export")

    def require_runtime(self) -> None:
        require_extra(self.extra, self.runtime_modules, f"running {self.name} artifacts")

    def sizes_of(self, artifact) -> list[int] | None:
        """The input sides `artifact` of this format takes; None means any (the live engine chooses among them)."""
        if self.input_sizes == "any":
            return None
        if self.input_sizes == "enumerated" and artifact.extra.get("sizes"):
            return sorted(int(size) for size in artifact.extra["sizes"])
        return [artifact.preprocess.size]

    def check_options(self, options: dict[str, Any], what: str = "export") -> dict[str, Any]:
        """`options` (only those the user gave) checked against this row; returns every option with defaults."""
        checked = check_options(self.options, options, f"{self.name} {what}")
        if self.options_rule:
            resolve(self.options_rule)(checked, f"{self.name} {what}")
        return checked


def check_options(accepted: tuple[Option, ...], given: dict[str, Any], owner: str) -> dict[str, Any]:
    by_name = {option.name: option for option in accepted}
    unknown = [name for name in given if name not in by_name]
    if unknown:
        takes = ", ".join(option.flag for option in accepted) or "no options"
        raise MvkitError(f"{owner} does not take {', '.join(_flag_of(name) for name in unknown)} (it takes {takes})")
    return {name: option.check(given.get(name, option.default), owner) for name, option in by_name.items()}


def _flag_of(name: str) -> str:
    for row in FORMATS.values():
        for option in (*row.options, *(o for m in row.int8.values() for o in m.options)):
            if option.name == name:
                return option.flag
    return "--" + name.replace("_", "-")


def resolve(reference: str) -> Callable[..., Any]:
    """"module:function" -> the function (imported now)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


CALIBRATION = Option("calibration", "percentile", "--calibration", ("percentile", "minmax"))

FORMATS: dict[str, Format] = {
    "safetensors": Format(
        "safetensors", ".safetensors", "PyTorch eager", "mvkit.runtime.torch_runtime:checkpoint_predictor",
        ("safetensors",), input_sizes="any", inspect="mvkit.models.checkpoint:inspect_safetensors"),
    "coreml": Format(
        "coreml", ".mlpackage", "Core ML (macOS/iOS); elsewhere mvkit's MIL interpreter",
        "mvkit.runtime.coreml_runtime:CoreMLPredictor", ("numpy",), extra="coreml",
        exporter="mvkit.export.coreml:export_coreml", export_modules=("coremltools",),
        options=(Option("sizes", None, "--sizes"),
                 Option("precision", "fp16", "--precision", ("fp16", "fp32", "mixed"), in_file_name=True),
                 Option("target", "iOS16", "--target", ("iOS15", "iOS16", "iOS17", "iOS18")),
                 Option("compression", "none", "--compress",
                        ("none", "int8", "palettize4", "palettize6", "palettize8", "prune50"), in_file_name=True)),
        structure_check="mvkit.verify:coreml_structure", input_sizes="enumerated",
        embed="mvkit.coreml.package:embed_coreml", inspect="mvkit.coreml.package:inspect_coreml",
        options_rule="mvkit.export.coreml:check_target", aliases=("mlpackage",)),
    "executorch": Format(
        "executorch", ".pte", "ExecuTorch XNNPACK", "mvkit.runtime.executorch_runtime:ExecutorchPredictor",
        ("executorch.runtime",), extra="executorch",
        exporter="mvkit.export.executorch:export_executorch", export_modules=("executorch", "torchao"),
        embed="mvkit.export.executorch:embed_executorch", inspect="mvkit.export.executorch:inspect_executorch",
        aliases=("pte",),
        int8={"ptq": Int8Method("mvkit.compress.pt2e:quantize_executorch_ptq", True,
                                "static int8 PT2E, XNNPACK quantizer"),
              "qat": Int8Method("mvkit.compress.pt2e:quantize_executorch_qat", True,
                                "quantization-aware fine-tune, then int8 PT2E",
                                options=(Option("epochs", 1, "--epochs", rule=(lambda v: v >= 1, "at least 1")),
                                         Option("lr", 1e-5, "--lr", rule=(lambda v: v > 0, "positive"))))}),
    "onnx": Format(
        "onnx", ".onnx", "ONNX Runtime", "mvkit.runtime.onnx_runtime:OnnxPredictor", ("onnxruntime",),
        extra="onnx", exporter="mvkit.export.onnx:export_onnx", export_modules=("onnx", "onnxscript"),
        embed="mvkit.export.onnx:embed_onnx", inspect="mvkit.runtime.onnx_runtime:inspect_onnx",
        int8={"ptq": Int8Method("mvkit.compress.onnx_int8:quantize_onnx", True,
                                "static int8 QDQ, ONNX Runtime", options=(CALIBRATION,),
                                sources=("safetensors", "onnx"))}),
    "litert": Format(
        "litert", ".tflite", "LiteRT interpreter", "mvkit.runtime.litert_runtime:LiteRTPredictor",
        ("ai_edge_litert",), extra="litert",
        exporter="mvkit.export.litert:export_litert", export_modules=("litert_torch",),
        embed="mvkit.export.litert:embed_litert", inspect="mvkit.export.litert:inspect_litert", aliases=("tflite",),
        int8={"ptq": Int8Method("mvkit.compress.litert_int8:quantize_litert", True,
                                "static int8 PT2E, litert-torch quantizer")}),
    "openvino": Format(
        "openvino", "_openvino", "OpenVINO CPU", "mvkit.runtime.openvino_runtime:OpenVINOPredictor", ("openvino",),
        extra="openvino", exporter="mvkit.export.openvino:export_openvino", export_modules=("openvino",),
        options=(Option("precision", "default", "--precision", ("default", "fp32", "fp16"), in_file_name=True),),
        embed="mvkit.export.openvino:embed_openvino", inspect="mvkit.runtime.openvino_runtime:inspect_openvino",
        int8={"ptq": Int8Method("mvkit.compress.openvino_int8:quantize_openvino", True,
                                "static int8 NNCF (OpenVINO), calibrated on real photos")}),
    "torchscript": Format(
        "torchscript", ".torchscript.pt", "torch.jit", "mvkit.runtime.torch_runtime:torchscript_predictor",
        ("torch",), exporter="mvkit.export.torchscript:export_torchscript", export_modules=("torch",),
        embed="mvkit.export.torchscript:embed_torchscript", inspect="mvkit.export.torchscript:inspect_torchscript",
        int8={"dynamic": Int8Method("mvkit.compress.dynamic:quantize_dynamic_linear", False,
                                    "PyTorch dynamic int8 of the Linear layers")}),
}


def get_format(name: str) -> Format:
    """The row of `name`, or of the format it is another name for (tflite: litert)."""
    row = FORMATS.get(name) or next((row for row in FORMATS.values() if name in row.aliases), None)
    if row is None:
        import difflib

        known = [*exportable(), *(alias for row in FORMATS.values() for alias in row.aliases)]
        near = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f" (did you mean {get_format(near[0]).name}?)" if near else ""
        raise MvkitError(f"unknown format {name!r}{hint}; choose from {', '.join(exportable())} or all")
    return row


def format_names(given: list[str]) -> list[str]:
    """-f values as typed (repeated, or comma-separated as --sizes is): each checked against the table and named
    by its row, in order, once each; "all" is kept for the caller to expand."""
    names = [part.strip() for value in given for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(name if name == "all" else get_format(name).name for name in names))


def exportable() -> list[str]:
    """Every format mvkit can export to (installed or not)."""
    return [name for name, row in FORMATS.items() if row.exporter]


def available_formats() -> list[str]:
    """Exportable formats whose converter is installed here (`-f all` means these)."""
    return [name for name, row in FORMATS.items() if row.can_export()]


def int8_formats(method: str) -> list[str]:
    """Formats that have an int8 `method` (quantize -f all means those installed)."""
    return [name for name, row in FORMATS.items() if method in row.int8]


def int8_method(fmt: str, method: str, source_format: str) -> Int8Method:
    """The int8 entry for (format, method) from an artifact of `source_format`, or a clear refusal."""
    row = get_format(fmt)
    if method not in row.int8:
        having = [name for name in int8_formats(method)] or ["none"]
        at_export = [option.flag for option in row.options if option.choices and "int8" in option.choices]
        also = f" ({fmt} takes int8 weights at export: mvkit export MODEL -f {fmt} {at_export[0]} int8)" \
            if at_export else ""
        raise MvkitError(f"--method {method} makes no {fmt} artifact; it makes: {', '.join(having)}{also}")
    entry = row.int8[method]
    if source_format not in entry.sources:
        raise MvkitError(f"{fmt} {method} starts from {' or '.join(entry.sources)}, not a {source_format} "
                         "artifact; give the mvkit checkpoint (.safetensors) it came from")
    return entry
