"""Batch prediction throughput and memory: `mvkit predict ... --out` on flowers128 with the local engine at 1 and 2
workers and the Ray engine at 1 and 2 actors, then peak memory of the local engine on manifests of 10k and 100k
paths (flowers128's photos repeated), each job a real `mvkit predict` process.

    .venv/bin/python benchmarks/batch_predict.py            # writes BENCHMARKS.md (section batch_predict)
    .venv/bin/python benchmarks/batch_predict.py --sizes 10000 100000

Model: EfficientNet-Lite0 with ImageNet weights and a 5-class head, exported to ONNX at 128 px (flowers128's
size). images/s counts every photo of the job, Ray's start-up included; peak memory is the largest process of the
job (resource.getrusage of the children).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FLOWERS = REPO.parent / "shared" / "data" / "flowers128"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import replace_section  # noqa: E402

CLI = [sys.executable, "-m", "mvkit.cli"]


def make_model(folder: Path) -> Path:
    from mvkit.data import load_data
    from mvkit.export import export
    from mvkit.models import create_model, save_checkpoint, set_preprocess

    classes = load_data(str(FLOWERS)).classes
    model = create_model("tf_efficientnet_lite0", pretrained=True, labels=classes)
    set_preprocess(model, size=128, crop_pct=1.0)
    save_checkpoint(model, folder / "lite0.safetensors", source="ImageNet Lite0, 5-class head (speed only)")
    return export(folder / "lite0.safetensors", "onnx", folder).path


def run_job(model: Path, source: str, out: Path, *options: str) -> dict:
    """One `mvkit predict --out` process: wall seconds, rows, and the peak RSS of its largest process."""
    # A fresh wrapper process per job, so getrusage(RUSAGE_CHILDREN) is this job's peak, not a running maximum
    wrapper = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    start = time.perf_counter()
    shown = subprocess.run([sys.executable, "-c", wrapper, *CLI, "predict", str(model), source, "--out", str(out),
                            "-k", "1", *options], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, peak_kb = shown.stdout.split()
    if code != "0":
        raise SystemExit(f"error: {shlex.join(options)} failed (exit {code})")
    rows = sum(1 for _ in out.open()) - (1 if out.suffix == ".csv" else 0)
    return {"seconds": round(seconds, 1), "rows": rows, "images_per_s": round(rows / seconds, 1),
            "peak_rss_mb": round(int(peak_kb) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--memory-workers", type=int, default=1, help="local workers for the memory runs")
    args = parser.parse_args()
    if not FLOWERS.is_dir():
        raise SystemExit(f"error: {FLOWERS} is missing (see ../shared/data/README.md)")
    photos = sorted(str(p) for p in FLOWERS.rglob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model = make_model(folder)
        for engine, workers in (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)):
            result = run_job(model, str(FLOWERS), folder / f"{engine}{workers}.jsonl", "--engine", engine,
                             "--workers", str(workers))
            rows.append({"job": f"{engine}, {workers} {'actor' if engine == 'ray' else 'worker'}(s)",
                         "photos": len(photos), **result})
            print(rows[-1], flush=True)
        for size in args.sizes:
            manifest = folder / f"paths{size}.txt"
            with manifest.open("w") as lines:
                for i in range(size):
                    lines.write(photos[i % len(photos)] + "\n")
            workers = str(args.memory_workers)
            result = run_job(model, str(manifest), folder / f"repeat{size}.jsonl", "--workers", workers)
            rows.append({"job": f"local, {workers} worker(s), manifest of {size:,} paths", "photos": size, **result})
            print(rows[-1], flush=True)
    command = "python benchmarks/batch_predict.py " + shlex.join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_predict.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    table = ["| job | photos | seconds | images/s | peak RSS MB |", "|---|---|---|---|---|"]
    table += [f"| {r['job']} | {r['photos']:,} | {r['seconds']} | {r['images_per_s']} | {r['peak_rss_mb']:.0f} |"
              for r in rows]
    replace_section("batch_predict", "\n".join([
        "## Batch prediction (`mvkit predict --out`)", "",
        f"Machine: {platform.machine()}, 2 cores. Command: `{command}`. EfficientNet-Lite0 ONNX at 128 px, top-1 rows "
        "to JSON Lines; each job one `mvkit predict` process (Ray's start-up included); peak RSS of the job's "
        "largest process (each job measured on its own).", "", *table]))
    print("\n".join(table))


if __name__ == "__main__":
    main()
