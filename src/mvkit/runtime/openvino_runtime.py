"""OpenVINO predictor: the IR compiled for the CPU plugin with a latency hint.
An IR exported with `--precision fp32` or `fp16` is compiled with INFERENCE_PRECISION_HINT f32; the default IR and
the int8 IR (for its float ops) run in the plugin's default precision, and `runtime` says which one ran (bf16 or
f32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvkit.artifact import Artifact
from mvkit.runtime.base import Predictor, softmax, usable_cores


def ir_file(path: Path) -> Path:
    """The .xml of an IR artifact (a folder holding model.xml, or the .xml itself)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.xml"))
        if not found:
            raise FileNotFoundError(f"no .xml IR file in {path}")
        return found[0]
    return path


class OpenVINOPredictor(Predictor):
    def __init__(self, artifact: Artifact, threads: int | None = None):
        super().__init__(artifact)
        import openvino as ov  # installed: the format table checks it first

        # The latency hint alone picks streams and threads; also setting INFERENCE_NUM_THREADS = cores and one stream
        # was slower on MobileViT-S (15.6 vs 14.2 ms, one scratch run), so threads are set only when asked for.
        config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        if artifact.extra.get("inference_precision") == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(ir_file(artifact.path))), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or usable_cores()
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "bf16", "f32"
        int8 = "int8, float ops in " if artifact.extra.get("weights") == "int8" else ""
        leading = len(artifact.extra.get("f32_convs") or [])
        kept = f" ({leading} leading convs in f32)" if leading and self.precision != "f32" else ""
        self._runtime = f"OpenVINO CPU plugin, {int8}{self.precision} inference{kept}"

    @property
    def runtime(self) -> str:
        return self._runtime

    @property
    def threads(self) -> int:
        return self._threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        output = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return softmax(np.asarray(output, dtype=np.float64)).astype(np.float32)


def inspect_openvino(path: Path):
    import openvino as ov

    from mvkit.metadata import FileFacts

    ov_model = ov.Core().read_model(str(ir_file(path)))
    metadata = {}
    if ov_model.has_rt_info(["mvkit"]):
        metadata = {key: value.astype(str) for key, value in ov_model.get_rt_info(["mvkit"]).astype(dict).items()}

    def signature(ports):
        return [{"name": port.get_any_name(), "dtype": port.get_element_type().get_type_name(),
                 "shape": [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]} for port in ports]

    return FileFacts(metadata, signature(ov_model.inputs), signature(ov_model.outputs))
