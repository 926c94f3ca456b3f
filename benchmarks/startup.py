"""How long a user waits for `mvkit predict` on one photo, and for a small batch job, per artifact format: fresh
processes (what a shell script, a cron job or a batch worker pays every time), interleaved rounds, medians. With
`--compare-with REV`, the same commands from the mvkit of another commit (a git worktree of REV, on this venv) run
in the same rounds, so the table holds both and their ratio.

    .venv/bin/python benchmarks/startup.py --compare-with 899376f      # writes BENCHMARKS.md (section startup)
    .venv/bin/python benchmarks/startup.py --rounds 3 --formats onnx

The model: the built-in ImageNet-pretrained EfficientNet-Lite0, exported by `mvkit export tf_efficientnet_lite0
--pretrained`; the photo: scikit-image's coffee; the batch job: 200 flowers128 photos into a CSV with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FLOWERS = REPO.parent / "shared" / "data" / "flowers128"
PYTHON = REPO / ".venv" / "bin" / "python"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import cpu_name, replace_section  # noqa: E402

SUFFIX = {"onnx": ".onnx", "openvino": "_openvino", "coreml": ".mlpackage", "executorch": ".pte",
          "safetensors": ".safetensors"}


def mvkit(source: Path, *args: str, cwd: Path) -> tuple[float, float]:
    """(seconds, peak resident MB) of one `mvkit ARGS` process, run from `source` (a checkout's src folder) on
    this venv; the peak is GNU time's, of the process itself (a batch job's reader processes are not in it)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "peak_kb %M", str(PYTHON), "-m", "mvkit.cli", *args], cwd=cwd,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"error: mvkit {shlex.join(args)} ({source}) failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    peak_kb = next(line for line in done.stderr.splitlines()[::-1] if line.startswith("peak_kb "))
    return seconds, int(peak_kb.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--formats", default="onnx,openvino,coreml,executorch,safetensors")
    parser.add_argument("--compare-with", help="a git revision whose mvkit runs beside this one")
    parser.add_argument("--photos", type=int, default=200, help="photos in the batch job")
    args = parser.parse_args()
    if not FLOWERS.is_dir():
        sys.exit(f"error: {FLOWERS} is missing (see ../shared/data/README.md)")
    command = " ".join(["python benchmarks/startup.py", shlex.join(sys.argv[1:])]).strip()
    formats = args.formats.split(",")
    sys.path.insert(0, str(REPO / "src"))
    from mvkit.demo import sample_photos

    photo = str(next(p for p in sample_photos() if p.stem == "coffee"))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        versions = {"this commit": REPO / "src"}
        if args.compare_with:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(work / "old"),
                            args.compare_with], check=True)
            versions[args.compare_with] = work / "old" / "src"
        listing = work / "photos.txt"
        listing.write_text("\n".join(str(p) for p in sorted(FLOWERS.rglob("*.jpg"))[:args.photos]) + "\n")
        exported = [part for fmt in formats if fmt != "safetensors" for part in ("-f", fmt)]
        if exported:
            mvkit(REPO / "src", "export", "tf_efficientnet_lite0", "--pretrained", "--out", str(work), *exported, cwd=work)
        model = work / "tf_efficientnet_lite0"
        if "safetensors" in formats:
            from mvkit.models import create_model, save_checkpoint

            save_checkpoint(create_model("tf_efficientnet_lite0", pretrained=True),
                            model.with_suffix(".safetensors"))
        times: dict[tuple[str, str, str], list[float]] = {}
        peaks: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for fmt in formats:
                artifact = str(model) + SUFFIX[fmt]
                order = list(enumerate(versions.items()))  # each version first in every other round
                for index, (version, source) in order if round_ % 2 == 0 else order[::-1]:
                    seconds, peak = mvkit(source, "predict", artifact, photo, cwd=work)
                    times.setdefault((fmt, "predict one photo", version), []).append(seconds)
                    peaks.setdefault((fmt, version), []).append(peak)
                    out = work / f"batch_{round_}_{fmt}_{index}.csv"  # a new file: nothing to resume
                    times.setdefault((fmt, f"batch job, {args.photos} photos", version), []).append(
                        mvkit(source, "predict", artifact, str(listing), "--out", str(out), "--workers", "2",
                              cwd=work)[0])
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        if args.compare_with:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "old")], check=True)
    medians = {key: statistics.median(values) for key, values in times.items()}
    (RESULTS / "startup.json").write_text(json.dumps({"command": command, "seconds": {
        " | ".join(key): values for key, values in times.items()}, "peak_mb": {
        " | ".join(key): values for key, values in peaks.items()}}, indent=1))
    names = list(versions)
    header = "| format | command | " + " | ".join(f"{name} s" for name in names) + \
        (f" | {names[1]} / this commit |" if len(names) > 1 else " |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for fmt in formats:
        for job in ("predict one photo", f"batch job, {args.photos} photos"):
            row = [medians[(fmt, job, name)] for name in names]
            ratio = f" | {row[1] / row[0]:.1f}x" if len(row) > 1 else ""
            lines.append(f"| {fmt} | {job} | " + " | ".join(f"{value:.2f}" for value in row) + ratio + " |")
    memory = ["| format | " + " | ".join(f"{name}: peak MB of `predict one photo`" for name in names) + " |",
              "|---|" + "---|" * len(names)]
    memory += [f"| {fmt} | " + " | ".join(f"{statistics.median(peaks[(fmt, name)]):.0f}" for name in names) + " |"
               for fmt in formats]
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}"
    replace_section("startup", "\n".join([
        "## Start-up: `mvkit predict` in a fresh process", "",
        f"Machine: {machine}. Command: `{command}`. Each cell: the median of {args.rounds} fresh processes, the "
        "versions and formats interleaved in each round. `predict one photo` is `mvkit predict ARTIFACT coffee.jpg`; "
        f"the batch job is `mvkit predict ARTIFACT photos.txt --out p.csv --workers 2` on {args.photos} flowers128 "
        "photos (two reader processes, each importing what reading needs). The model: the pretrained "
        "EfficientNet-Lite0 at 224 px.", "",
        *lines, "",
        "Peak resident memory of the same processes (GNU time; medians):", "",
        *memory, "",
        "A Predictor of an ONNX Runtime or OpenVINO file imports neither torch, torchvision nor timm (the Preprocess "
        "applies timm's eval transform itself, equal to it bit for bit: tests/test_images.py), nor does a Core ML "
        "package's (read with coremltools' protobuf classes alone, run by mvkit's numpy interpreter off macOS); "
        "ExecuTorch's Python runtime imports torch itself, and a checkpoint needs it."]))


if __name__ == "__main__":
    main()
