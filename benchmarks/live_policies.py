"""The guide's section 3 table and section 4 claims, measured here with the live engine on MobileViT-XXS (256 px).

    .venv/bin/python benchmarks/live_policies.py            # writes BENCHMARKS.md and benchmarks/results/live_policies.json
    .venv/bin/python benchmarks/live_policies.py --seconds 6 --rounds 1   # quicker

Every configuration runs `mvkit.live.run` in a fresh process (so peak memory is its own) over the same real video:
a 30 fps, 320x240 clip made of flowers128 photos, played on its own clock, at --fps 15. Configurations run in
blocks, one after another, repeated --rounds times in alternating order; the table gives the median per metric.
MobileViT-XXS has the ImageNet architecture with a 5-class head, randomly initialised: weights do not change
speed, and no pretrained MobileViT is available offline. int8 is calibrated on 64 real training photos.

- Section 3 (the guide's iPhone 13 Pro table): baseline (eager PyTorch, fresh tensors per frame) / + buffer reuse /
  + dynamic int8 (the guide's step: PyTorch dynamic quantization of the Linear layers) / + static int8 in each
  runtime here (ONNX Runtime, ExecuTorch XNNPACK): inference ms, peak memory, energy per 1,000 inferences.
- Engine overhead: inside the engine vs a bare loop in the same process (prepare into the buffer + run, on the
  same decoded frames, before the engine starts).
- Section 4: cold start (first result after start, with and without warm-up, fresh processes) and latency with
  and without the policies (without: every frame the camera gives, fresh buffers, no warm-up).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

FLOWERS = REPO.parent / "shared" / "data" / "flowers128"


def make_clip(path: Path, seconds: float) -> Path:
    import av
    from PIL import Image

    photos = sorted(FLOWERS.glob("*/*.jpg"))[::97]
    frames = int(seconds * 30)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            picture = Image.open(photos[(index // 10) % len(photos)]).convert("RGB").resize((320, 240))
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_artifacts(work: Path) -> dict[str, Path]:
    from mvkit.compress import plan_quantize, quantize
    from mvkit.export import export
    from mvkit.models import create_model, save_checkpoint, set_preprocess

    checkpoint = work / "mobilevit_xxs.safetensors"
    if not (work / "mobilevit_xxs.int8.onnx.mvkit.json").exists():
        classes = sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())
        model = set_preprocess(create_model("mobilevit_xxs", labels=classes), size=256)
        save_checkpoint(model, checkpoint)
        export(checkpoint, "onnx")
        export(checkpoint, "executorch")
        export(checkpoint, "torchscript")
        for plan in plan_quantize(checkpoint, "ptq", ["onnx", "executorch"], str(FLOWERS)):
            quantize(plan, checkpoint, str(FLOWERS), count=64)
        for plan in plan_quantize(checkpoint, "dynamic", ["torchscript"], None):
            quantize(plan, checkpoint, None)
    names = {"eager": "mobilevit_xxs.safetensors", "onnx": "mobilevit_xxs.onnx", "onnx int8": "mobilevit_xxs.int8.onnx",
             "executorch int8": "mobilevit_xxs.ptq-int8.pte", "dynamic int8": "mobilevit_xxs.dynamic-int8.torchscript.pt"}
    paths = {key: work / name for key, name in names.items()}
    for key, path in paths.items():
        if not path.exists():
            found = sorted(work.glob(f"*{path.suffix}"))
            sys.exit(f"{path} was not made ({key}); files here: {', '.join(p.name for p in found)}")
    return paths


# name -> (artifact key, live options); section 3 rows first
CONFIGS = {
    "baseline: eager, fresh tensors per frame": ("eager", {"reuse_buffers": False}),
    "+ buffer reuse": ("eager", {}),
    "+ dynamic int8 (Linear layers, TorchScript)": ("dynamic int8", {}),
    "+ static int8, ExecuTorch XNNPACK": ("executorch int8", {}),
    "+ static int8, ONNX Runtime": ("onnx int8", {}),
    "ONNX Runtime fp32": ("onnx", {}),
    "no policies: every frame, fresh tensors, no warm-up (ONNX int8)": ("onnx int8", {"fps": 1000, "reuse_buffers": False,
                                                                                    "warmup": 0}),
}
COLD = {"cold start, no warm-up": {"warmup": 0}, "cold start, warm-up (2 calls)": {"warmup": 2}}


def worker(spec: dict) -> dict:
    """One live run in this (fresh) process. With spec["bare"]: blocks of a bare loop (decoded frame -> RGB ->
    buffer -> run, paced at 15 fps) alternating with blocks of the engine on the same predictor, so both see the
    same machine state; the summary is the last engine block's."""
    import numpy as np
    import torch

    from mvkit.artifact import Artifact
    from mvkit.live import run
    from mvkit.live.engine import LiveOptions, LiveRun
    from mvkit.live.policies import SizeChoice, ThermalRate
    from mvkit.live.prepare import FramePreparer
    from mvkit.live.sources import open_source
    from mvkit.runtime import load_predictor

    torch.set_num_threads(2)
    options = {"fps": 15.0, **spec["options"]}
    if not spec.get("bare"):
        engine = run(spec["artifact"], spec["clip"], **options)
        for _ in engine:
            pass
        return {"summary": engine.summary(), "bare": None}
    import av

    artifact = Artifact.load(Path(spec["artifact"]))
    predictor = load_predictor(spec["artifact"])
    preparer = FramePreparer(artifact.preprocess, reuse=options.get("reuse_buffers", True))
    with av.open(spec["clip"]) as container:
        frames = [f for _, f in zip(range(45), container.decode(video=0))]  # decoded, not yet RGB
    bare_total, bare_inference, engine_total, engine_inference = [], [], [], []
    for _ in range(3):
        for frame in frames:
            started = time.perf_counter()
            batch = preparer(frame.to_image())
            prepared = time.perf_counter()
            predictor.run(batch)
            finished = time.perf_counter()
            bare_total.append((finished - started) * 1000)
            bare_inference.append((finished - prepared) * 1000)
            time.sleep(max(0.0, 1 / 15 - (finished - started)))  # the live pace
        engine = LiveRun(lambda: predictor, open_source(spec["clip"], 15.0), artifact.preprocess,
                         SizeChoice(artifact.preprocess.size, "the artifact's size"),
                         LiveOptions(max_frames=45, **options), ThermalRate(None), {"artifact": spec["artifact"]})
        for _ in engine:
            pass
        engine_total += engine.metrics.end_to_end_ms
        engine_inference += engine.metrics.inference_ms
    bare = {"prepare_plus_inference_p50_ms": float(np.median(bare_total)),
            "inference_p50_ms": float(np.median(bare_inference)),
            "engine_end_to_end_p50_ms": float(np.median(engine_total)),
            "engine_inference_p50_ms": float(np.median(engine_inference))}
    engine = run(spec["artifact"], spec["clip"], **options)  # the row itself: the whole clip, as for the others
    for _ in engine:
        pass
    return {"summary": engine.summary(), "bare": bare}


def measure(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"worker failed for {spec}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of the clip (each run plays it once).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_live")
    parser.add_argument("--markdown-only", action="store_true", help="Rewrite BENCHMARKS.md from the last results.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown_only:
        write_markdown(json.loads((RESULTS / "live_policies.json").read_text())["rows"], args)
        return
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if not FLOWERS.is_dir():
        sys.exit(f"{FLOWERS} not found")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = make_artifacts(args.out)
    clip = make_clip(args.out / "flowers_320x240_30fps.mp4", args.seconds)
    runs: dict[str, list[dict]] = {name: [] for name in [*CONFIGS, *COLD]}
    for round_index in range(args.rounds):
        order = list(CONFIGS) if round_index % 2 == 0 else list(reversed(CONFIGS))
        for name in order:
            key, options = CONFIGS[name]
            spec = {"artifact": str(paths[key]), "clip": str(clip), "options": options, "bare": "fps" not in options}
            runs[name].append(measure(spec))
            print(f"{name}: {runs[name][-1]['summary']['latency_ms']['inference_ms']}", file=sys.stderr)
        for name, options in COLD.items():  # a short run: only its first result matters
            runs[name].append(measure({"artifact": str(paths["onnx int8"]), "clip": str(clip),
                                       "options": {**options, "max_frames": 5}}))
    rows = []
    for name, measured in runs.items():
        summaries = [m["summary"] for m in measured]
        bare = [m["bare"] for m in measured if m["bare"]]

        def pick(*keys, source=summaries):
            values = []
            for item in source:
                for key in keys:
                    item = item.get(key) if isinstance(item, dict) else None
                values.append(item)
            return median(values)

        energy = [s["energy"].get("per_1000_inferences_j") for s in summaries]
        rows.append({
            "config": name,
            "artifact": Path(summaries[0]["artifact"]).name,
            "inference_p50_ms": pick("latency_ms", "inference_ms", "p50"),
            "inference_p95_ms": pick("latency_ms", "inference_ms", "p95"),
            "end_to_end_p50_ms": pick("latency_ms", "end_to_end_ms", "p50"),
            "end_to_end_p95_ms": pick("latency_ms", "end_to_end_ms", "p95"),
            "prepare_p50_ms": pick("latency_ms", "prepare_ms", "p50"),
            "achieved_fps": pick("fps", "achieved"),
            "processed": pick("frames", "processed"),
            "stale": pick("frames", "dropped", "stale"),
            "cpu_percent": pick("cpu_percent"),
            "peak_rss_mb": pick("peak_rss_mb"),
            "energy_j_per_1000": median(energy),
            "energy_note": summaries[0]["energy"].get("reason"),
            "first_inference_ms": pick("start", "first_inference_ms"),
            "first_result_ms": pick("start", "first_result_ms"),
            "load_ms": pick("start", "load_ms"),
            "warmup_ms": pick("start", "warmup_ms"),
            "bare_inference_p50_ms": median([b["inference_p50_ms"] for b in bare]),
            "bare_prepare_plus_inference_p50_ms": median([b["prepare_plus_inference_p50_ms"] for b in bare]),
            "paired_engine_end_to_end_p50_ms": median([b["engine_end_to_end_p50_ms"] for b in bare]),
            "paired_engine_inference_p50_ms": median([b["engine_inference_p50_ms"] for b in bare]),
            "runs": len(summaries),
        })
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"
    (RESULTS / "live_policies.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    write_markdown(rows, args)


def write_markdown(rows: list[dict], args) -> None:
    from bench_markdown import replace_section

    by = {row["config"]: row for row in rows}
    command = "`.venv/bin/python benchmarks/live_policies.py" + \
        (f" --seconds {args.seconds:g}" if args.seconds != 10 else "") + \
        (f" --rounds {args.rounds}" if args.rounds != 2 else "") + "`"
    lines = [
        "## Live engine: the guide's section 3 table and section 4 claims (MobileViT-XXS, 256 px)",
        "",
        f"Command: {command}. Each row: `mvkit.live.run` in a fresh process over the same real 30 fps video "
        "(flowers128 photos, 320x240) at `--fps 15`, median of the rounds. Inference and end-to-end (frame read to "
        "result) latencies are per processed frame, prepare is frame to model input (RGB conversion, resize, crop, "
        "normalise); peak memory is the process's high-water mark (PyTorch itself included).",
        "",
        "| configuration | artifact | prepare p50 ms | inference p50 / p95 ms | end-to-end p50 / p95 ms | bare p50 ms "
        "| engine overhead | fps | CPU % | peak memory MB | energy J / 1,000 inferences |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["config"] in COLD:
            continue
        bare = row["bare_prepare_plus_inference_p50_ms"]
        paired = row["paired_engine_end_to_end_p50_ms"]
        overhead = f"{paired / bare - 1:+.1%}" if bare else "n/a"
        lines.append(
            f"| {row['config']} | {row['artifact']} | {fmt(row['prepare_p50_ms'])} "
            f"| {fmt(row['inference_p50_ms'])} / {fmt(row['inference_p95_ms'])} "
            f"| {fmt(row['end_to_end_p50_ms'])} / {fmt(row['end_to_end_p95_ms'])} | {fmt(bare)} | {overhead} "
            f"| {fmt(row['achieved_fps'])} | {fmt(row['cpu_percent'], 0)} | {fmt(row['peak_rss_mb'], 0)} "
            f"| {fmt(row['energy_j_per_1000'])} |")
    note = next((row["energy_note"] for row in rows if row["energy_note"]), None)
    cold_off, cold_on = by["cold start, no warm-up"], by["cold start, warm-up (2 calls)"]
    base = by["baseline: eager, fresh tensors per frame"]
    fastest = min((row for row in rows if row["config"].startswith("+")), key=lambda row: row["inference_p50_ms"])
    free = by["no policies: every frame, fresh tensors, no warm-up (ONNX int8)"]
    policed = by["+ static int8, ONNX Runtime"]
    lines += [
        "",
        f"Energy: {note or 'RAPL read'}." if note else "",
        "",
        "Engine overhead = end-to-end p50 in the engine / bare p50 - 1 (the bare column), from three alternating blocks of 45 frames each "
        "in one process on the same loaded model: the bare loop converts a decoded frame to RGB, prepares it into the "
        "buffer and runs the model, paced at 15 fps; the engine does the same work plus decoding on the capture thread "
        "(on the same 2 cores), the slot hand-off and the result delivery.",
        "",
        "| the guide's claim (section 4) | measured here |",
        "|---|---|",
        f"| cold start -40% with warm-up | first result {fmt(cold_off['first_result_ms'])} ms without warm-up, "
        f"{fmt(cold_on['first_result_ms'])} ms with it ({_change(cold_off['first_result_ms'], cold_on['first_result_ms'])}); "
        f"first inference {fmt(cold_off['first_inference_ms'])} vs {fmt(cold_on['first_inference_ms'])} ms; the warm-up "
        f"itself takes {fmt(cold_on['warmup_ms'])} ms before the first frame (ONNX int8, fresh process) |",
        f"| latency -35% with the policies | end-to-end p50 {fmt(free['end_to_end_p50_ms'])} ms without (every frame, "
        f"fresh tensors, no warm-up), {fmt(policed['end_to_end_p50_ms'])} ms with ({_change(free['end_to_end_p50_ms'], policed['end_to_end_p50_ms'])}); "
        f"p95 {fmt(free['end_to_end_p95_ms'])} vs {fmt(policed['end_to_end_p95_ms'])} ms; CPU {fmt(free['cpu_percent'], 0)}% vs "
        f"{fmt(policed['cpu_percent'], 0)}% |",
        f"| all measures together (section 3: 34 -> 18 ms, -47%) | inference p50 {fmt(base['inference_p50_ms'])} ms "
        f"baseline -> {fmt(fastest['inference_p50_ms'])} ms with {fastest['config'][2:]} "
        f"({_change(base['inference_p50_ms'], fastest['inference_p50_ms'])}) |",
        "| thermal throttling events -60% | not measurable here: this machine has no CPU temperature sensor "
        "(the policy says so and stays off; its behaviour is tested with a simulated sensor) |",
    ]
    replace_section("live_policies", "\n".join(line for line in lines))


def _change(before, after) -> str:
    return "n/a" if not before or after is None else f"{after / before - 1:+.0%}"


if __name__ == "__main__":
    main()
