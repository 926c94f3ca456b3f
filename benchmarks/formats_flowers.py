"""Every phone format checked against its checkpoint on flowers128 val, and speed side by side in one run.

    .venv/bin/python benchmarks/formats_flowers.py                 # parity + speed, writes BENCHMARKS.md
    .venv/bin/python benchmarks/formats_flowers.py --only parity   # or --only speed
    .venv/bin/python benchmarks/formats_flowers.py --only parity --reuse --formats qat   # only the QAT rows

Parity: the fine-tuned EfficientNet-Lite0 and the distilled MobileViT-XXS that benchmarks/finetune_flowers.py
writes (runs/bench_flowers/{finetune,distilled}/best.safetensors) are exported to ONNX, ExecuTorch, TorchScript
and Core ML, quantized to int8 (ONNX Runtime QDQ and PT2E/XNNPACK, 256 calibration photos from the training
split), and each artifact is verified on the whole val split in its own runtime. Core ML packages run in
mvkit's numpy interpreter (no Core ML on Linux) on --coreml-photos val photos spread over the classes (default 150; the
interpreter is slow).

Speed: MobileViT-S at 256 px (weights do not change speed; a checkpoint with its ImageNet architecture and 5
flower classes) in eager PyTorch, ONNX Runtime fp32/int8, ExecuTorch fp32/int8 and, where the litert extra is
installed (its own environment), LiteRT fp32/int8, interleaved in one bench run at batch 1 with every core; plus,
where coremltools is installed, the Core ML package in mvkit's numpy interpreter (a checking tool, not a phone
runtime).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import replace_section  # noqa: E402
from mvkit.bench import bench  # noqa: E402
from mvkit.compress.onnx_int8 import quantize_onnx_static  # noqa: E402
from mvkit.compress.pt2e import quantize_executorch  # noqa: E402
from mvkit.data import load_data  # noqa: E402
from mvkit.data.datasets import take_evenly  # noqa: E402
from mvkit.export import available_formats, export  # noqa: E402
from mvkit.models import create_model, save_checkpoint, set_preprocess  # noqa: E402
from mvkit.verify import verify  # noqa: E402

DEFAULT_LITE0 = REPO / "runs" / "bench_flowers" / "finetune" / "best.safetensors"
DEFAULT_XXS = REPO / "runs" / "bench_flowers" / "distilled" / "best.safetensors"


def artifacts_for(checkpoint: Path, data: str, calib: int, qat_epochs: int, reuse: bool,
                  only: str | None = None) -> dict[str, Path]:
    """Every artifact of one checkpoint (with `only`, those whose name contains it); with `reuse`, files already
    made by an earlier run are kept."""
    stem = checkpoint.stem
    paths = {}

    def onnx_file() -> Path:  # the int8 row quantizes the fp32 file, made here if its row was not
        return paths.get("onnx") or export(checkpoint, "onnx").path

    recipes = {  # row name: (file name, how to make it)
        **{fmt: (stem + suffix, lambda fmt=fmt: export(checkpoint, fmt))
           for fmt, suffix in (("onnx", ".onnx"), ("executorch", ".pte"), ("torchscript", ".torchscript.pt"),
                               ("coreml", ".mlpackage"))},
        "coreml fp32": (f"{stem}.fp32.mlpackage", lambda: export(checkpoint, "coreml", precision="fp32")),
        "coreml mixed (stem fp32)": (f"{stem}.mixed.mlpackage", lambda: export(checkpoint, "coreml", precision="mixed")),
        "coreml int8 weights": (f"{stem}.int8.mlpackage", lambda: export(checkpoint, "coreml", compression="int8")),
        "coreml palettize6": (f"{stem}.palettize6.mlpackage", lambda: export(checkpoint, "coreml", compression="palettize6")),
        "onnx int8": (f"{stem}.int8.onnx", lambda: quantize_onnx_static(onnx_file(), data, count=calib)),
        "executorch int8 (ptq)": (f"{stem}.ptq-int8.pte", lambda: quantize_executorch(checkpoint, data, count=calib)),
    }
    if "openvino" in available_formats():  # the optional extra
        from mvkit.compress.openvino_int8 import quantize_openvino

        recipes["openvino (plugin default precision)"] = (f"{stem}_openvino", lambda: export(checkpoint, "openvino"))
        for precision in ("fp32", "fp16"):
            recipes[f"openvino {precision}"] = (f"{stem}.{precision}_openvino",
                                                lambda p=precision: export(checkpoint, "openvino", precision=p))
        recipes["openvino int8 (NNCF)"] = (f"{stem}.int8_openvino", lambda: quantize_openvino(checkpoint, data, count=calib))
    if qat_epochs:
        recipes[f"executorch int8 (qat, {qat_epochs} epoch)"] = (
            f"{stem}.qat-int8.pte",
            lambda: quantize_executorch(checkpoint, data, count=calib, method="qat", qat_epochs=qat_epochs))
    for name, (file_name, make) in recipes.items():
        if only and only not in name:
            continue
        path = checkpoint.parent / file_name
        paths[name] = path if reuse and path.with_name(file_name + ".mvkit.json").exists() else make().path
    return paths


def parity(args) -> list[dict]:
    rows = []
    for label, source, default in (("EfficientNet-Lite0 fine-tuned", args.lite0, DEFAULT_LITE0),
                                   ("MobileViT-XXS distilled", args.xxs, DEFAULT_XXS)):
        if not source.exists():
            sys.exit(f"{source} not found: run benchmarks/finetune_flowers.py --only table first")
        if source != default:  # another run's checkpoint: its rows say which
            label = f"{label.split()[0]} ({source.parent.name})"
        work = args.out / source.parent.name
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = work / "model.safetensors"
        if not (args.reuse and checkpoint.exists()):
            shutil.copy(source, checkpoint)
            shutil.copy(source.with_name(source.name + ".mvkit.json"), checkpoint.with_name(checkpoint.name + ".mvkit.json"))
        for fmt, path in artifacts_for(checkpoint, str(args.data), args.calib, args.qat_epochs, args.reuse,
                                       only=args.formats).items():
            # the numpy interpreter is slow at 224 px: Core ML rows use photos spread over the classes
            report = verify(path, str(args.data), limit=args.coreml_photos if fmt.startswith("coreml") else None)
            row = {"model": label, "format": fmt, "photos": report.count, "agreement": report.agreement,
                   "max_abs_prob_diff": report.max_abs_prob_diff, "artifact_top1": report.artifact_top1,
                   "checkpoint_top1": report.reference_top1, "runtime": report.runtime, "problems": report.problems,
                   "command": args.command}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def speed(args) -> list[dict]:
    splits = load_data(str(args.data))
    photos = [image for image, _ in (take_evenly(splits.val, 5)[i] for i in range(5))]
    work = args.out / "speed"
    work.mkdir(parents=True, exist_ok=True)
    model = create_model("mobilevit_s", labels=splits.classes)
    set_preprocess(model, size=256)
    checkpoint = work / "mobilevit_s.safetensors"
    save_checkpoint(model, checkpoint, source="mobilevit_s architecture, random init (speed only)")
    paths = {"pytorch eager": checkpoint}
    for fmt in ("onnx", "executorch"):
        paths[fmt] = export(checkpoint, fmt).path
    paths["onnx int8"] = quantize_onnx_static(paths["onnx"], str(args.data), count=args.calib).path
    paths["executorch int8"] = quantize_executorch(checkpoint, str(args.data), count=args.calib).path
    installed = available_formats()
    if "litert" in installed:  # the optional extra, which lives in its own environment (see README)
        from mvkit.compress.litert_int8 import quantize_litert

        paths["litert"] = export(checkpoint, "litert").path
        paths["litert int8"] = quantize_litert(checkpoint, str(args.data), count=args.calib).path
    if "coreml" in installed:
        # not a phone number: how fast mvkit's numpy interpreter checks a Core ML package (issue: <= 5x eager)
        paths["coreml fp32 (numpy interpreter)"] = export(checkpoint, "coreml", precision="fp32", sizes=[256]).path
    skipped = sorted({"litert", "coreml"} - set(installed))
    if skipped:
        print(f"not installed here, left out of the speed table: {', '.join(skipped)}", flush=True)
    rows = []
    results = bench(list(paths.values()), photos, rounds=args.rounds, batch=8, measure_memory=False)
    for name, row in zip(paths, results):
        rows.append({"model": "mobilevit_s", "px": 256, "runtime": name, "p50_ms": row.latency_p50_ms,
                     "p90_ms": row.latency_p90_ms, "img_s": row.throughput_img_s, "file_mb": row.file_mb, "threads": row.threads})
    eager = rows[0]["p50_ms"]
    for row in rows:
        row["speedup_vs_eager"] = eager / row["p50_ms"]
    by_name = {row["runtime"]: row for row in rows}
    for fmt in ("onnx", "executorch", "litert"):
        if fmt in by_name:
            by_name[f"{fmt} int8"]["int8_speedup_vs_fp32"] = by_name[fmt]["p50_ms"] / by_name[f"{fmt} int8"]["p50_ms"]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def write_markdown(results: dict) -> None:
    lines = ["## Phone formats: parity on flowers128 val and speed (the guide's sections 2, 6, 7)", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.", ""]
    if results.get("parity"):
        commands = list(dict.fromkeys(row.get("command", results["parity_command"]) for row in results["parity"]))
        lines += [f"Command: `{commands[0]}`" + "".join(f"; rows re-measured by `{c}`" for c in commands[1:]), "",
                  "Each artifact in its own runtime vs its checkpoint in PyTorch on the whole val split (698 photos; "
                  "Core ML rows: the photos column, spread over the classes); int8 calibrated on 256 training photos "
                  "spread over the classes.", "",
                  "| model | format | photos | agreement | max abs dp | artifact top-1 | checkpoint top-1 | top-1 change |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in results["parity"]:
            change = (row["artifact_top1"] - row["checkpoint_top1"]) * 100
            runtime = " (numpy MIL interpreter)" if row.get("runtime") and "interpreter" in row["runtime"] else ""
            lines.append(f"| {row['model']} | {row['format']}{runtime} | {row['photos']} | {row['agreement']:.1%} | {row['max_abs_prob_diff']:.1e} | "
                         f"{row['artifact_top1']:.1%} | {row['checkpoint_top1']:.1%} | {change:+.1f} pt |")
        lines.append("")
    if results.get("speed"):
        lines += [f"Command: `{results['speed_command']}`", "",
                  "MobileViT-S, 256 px, batch 1, all cores, medians of interleaved rounds in one run:", "",
                  "| runtime | p50 ms | p90 ms | img/s (batch 8) | MB | vs eager | int8 vs its fp32 |", "|---|---|---|---|---|---|---|"]
        for row in results["speed"]:
            ratio = f"{row['int8_speedup_vs_fp32']:.2f}x" if "int8_speedup_vs_fp32" in row else ""
            lines.append(f"| {row['runtime']} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['img_s']:.1f} | "
                         f"{row['file_mb']:.1f} | {row['speedup_vs_eager']:.2f}x | {ratio} |")
        lines.append("")
    replace_section("formats_flowers", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flowers128")
    parser.add_argument("--lite0", type=Path, default=DEFAULT_LITE0)
    parser.add_argument("--xxs", type=Path, default=DEFAULT_XXS)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_formats")
    parser.add_argument("--only", choices=["parity", "speed"], default=None)
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--coreml-photos", type=int, default=150, help="val photos for Core ML rows (interpreter)")
    parser.add_argument("--reuse", action="store_true", help="keep artifacts an earlier run made")
    parser.add_argument("--formats", default=None,
                        help="parity: re-measure only the rows whose format contains this text (e.g. qat); the other "
                             "rows stay as the last run saved them")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"flowers128 not found at {args.data}")
    results_file = RESULTS / "formats_flowers.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    command = args.command = "python benchmarks/formats_flowers.py " + shlex.join(sys.argv[1:])
    if args.only in (None, "parity"):
        rows = parity(args)
        if args.formats:  # the new rows replace their old selves; the others keep the command that made them
            fresh = {(row["model"], row["format"]): row for row in rows}
            old_rows = [{"command": results.get("parity_command", command), **row} for row in results.get("parity", [])]
            rows = [fresh.pop((row["model"], row["format"]), row) for row in old_rows] + list(fresh.values())
        else:
            results["parity_command"] = command
        results["parity"] = rows
    if args.only in (None, "speed"):
        results["speed"], results["speed_command"] = speed(args), command
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=1))
    write_markdown(results)


if __name__ == "__main__":
    main()
