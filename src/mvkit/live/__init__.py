"""Real-time classification over a camera, a video file, a stream or a folder of photos, with the guide's
deployment policies (frame interval, latest-frame hand-off, warm-up, buffer reuse, temperature-aware rate, input
size by device, release when idle). `run(...)` returns a LiveRun; iterate it for per-frame results:

    for result in mvkit.live.run("best.onnx", "clip.mp4", fps=15):
        print(result.index, result.label, result.confidence)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mvkit.errors import MvkitError
from mvkit.live.engine import LiveOptions, LiveResult, LiveRun
from mvkit.live.policies import Device, ThermalRate, choose_input_size, find_sensor
from mvkit.live.sources import open_source


def _candidates(models: Sequence[str | Path], pretrained: bool, weights: Path | None) -> list[dict]:
    """Each model as (the sizes it takes, its preprocessing, how to load it), read without loading it."""
    from mvkit.artifact import Artifact
    from mvkit.formats import FORMATS
    from mvkit.runtime import is_artifact, load_predictor

    found = []
    for model in models:
        if is_artifact(model):
            artifact = Artifact.load(Path(model))
            row = FORMATS.get(artifact.format)
            if row is None:
                raise MvkitError(f"{model}: format {artifact.format!r} cannot run here")
            row.require_runtime()
            found.append({"sizes": row.sizes_of(artifact), "preprocess": artifact.preprocess,
                          "load": (lambda path=Path(model): load_predictor(path)),
                          "artifact": str(model), "format": artifact.format, "model_name": artifact.model_name})
        else:
            from mvkit.models import load_model, preprocess_of
            from mvkit.runtime.torch_runtime import model_predictor

            net = load_model(str(model), pretrained=pretrained, weights=weights, require_weights=True)
            found.append({"sizes": None, "preprocess": preprocess_of(net),
                          "load": (lambda net=net: model_predictor(net)),
                          "artifact": str(model), "format": "pytorch", "model_name": str(model)})
    return found


# LiveOptions' numbers: (flag, allowed, what it must be); a negative --warmup was an UnboundLocalError traceback
OPTION_RULES = {
    "max_frames": ("--frames", lambda v: v >= 1, "at least 1"),
    "duration_s": ("--duration", lambda v: v > 0, "positive"),
    "warmup": ("--warmup", lambda v: v >= 0, "0 or more"),
    "idle_release_s": ("--idle-release", lambda v: v > 0, "positive"),
    "topk": ("--topk", lambda v: v >= 1, "at least 1"),
}


def run(models: str | Path | Sequence[str | Path], source: str | int | Path, fps: float = 15.0,
        size: int | None = None, pretrained: bool = False, weights: Path | None = None,
        device: Device | None = None, thermal: ThermalRate | None = None, reconnect_for_s: float = 30.0,
        **options) -> LiveRun:
    """A live run of `models` (one artifact, or one per input size: the size policy picks among them) over
    `source`. Options: see LiveOptions (max_frames, duration_s, warmup, reuse_buffers, realtime, topk, out,
    metrics_path, serve, idle_release_s). Everything is checked and opened here; frames flow when iterated."""
    if fps <= 0:
        raise MvkitError(f"--fps must be positive, not {fps}")
    live_options = LiveOptions(fps=fps, **options)
    for name, (flag, allowed, requirement) in OPTION_RULES.items():
        value = getattr(live_options, name)
        if value is not None and not allowed(value):
            raise MvkitError(f"{flag} must be {requirement}, not {value}")
    if live_options.out is not None:
        from mvkit.live.overlay import check_video_out

        check_video_out(live_options.out)
    from mvkit.files import check_file_out

    for flag, written, example in (("--out", live_options.out, "live.mp4"),
                                   ("--metrics", live_options.metrics_path, "metrics.json")):
        if written is not None:
            check_file_out(Path(written), flag, example)
    models = [models] if isinstance(models, (str, Path)) else list(models)
    if not models:
        raise MvkitError("give a model to run")
    candidates = _candidates(models, pretrained, weights)
    supported = None if any(c["sizes"] is None for c in candidates) else \
        sorted({s for c in candidates for s in c["sizes"]})
    trained = max(c["preprocess"].size for c in candidates)  # a Core ML package's Preprocess: its model's own size
    choice = choose_input_size(device or Device.detect(), supported, size, trained=trained)
    chosen = next(c for c in candidates if c["sizes"] is None or choice.size in c["sizes"])
    stream = open_source(source, fps, reconnect_for_s=reconnect_for_s)
    description = {"artifact": chosen["artifact"], "format": chosen["format"], "model_name": chosen["model_name"]}
    thermal = thermal if thermal is not None else ThermalRate(find_sensor())
    return LiveRun(chosen["load"], stream, chosen["preprocess"], choice, live_options, thermal, description)


__all__ = ["LiveOptions", "LiveResult", "LiveRun", "run"]
