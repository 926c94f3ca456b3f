"""The guide's model-choice tables measured here: `mvkit compare` on ../shared/data/flowers128, then the guide's
sections 1 (MobileNetV3 vs MobileViT), 5 (flowers fine-tuning), 6 (compression) and 7 (alternatives), each beside
the guide's own figures with the differences called out.

    .venv/bin/python benchmarks/guide_tables.py                  # compare + compression + tables (about an hour)
    .venv/bin/python benchmarks/guide_tables.py --only tables    # rebuild the tables from the saved results
    .venv/bin/python benchmarks/guide_tables.py --retime         # time the saved artifacts again (quiet machine)

Budget (the same for every model): --epochs at --img-size px (flowers128's native size), batch 32, on 2 CPU cores.
Models with ImageNet weights offline (EfficientNet-Lite0) are fine-tuned; the others have none and train from
scratch: the table says which. Latency is batch 1 in each runtime, interleaved rounds in one bench run per model.
Section 5 reads benchmarks/results/finetune_flowers.json (benchmarks/finetune_flowers.py). Section 6 compresses the
compared MobileViT-S (the guide's model) every way mvkit can and measures size, peak memory, latency and accuracy.
Writes benchmarks/results/guide_tables.json (which `mvkit report` renders) and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import cpu_name, replace_section  # noqa: E402

FLOWERS = REPO.parent / "shared" / "data" / "flowers128"
MODELS = ["mobilevit_xxs", "mobilevit_s", "mobilenetv3_large_100", "tf_efficientnet_lite0", "edgevit_xxs",
          "mobile_former_96m"]

# The guide's own figures (../shared/MISSION.md): iPhone latencies, ImageNet top-1, the guide's memory readings.
GUIDE_SECTION1 = {"mobilenetv3_large_100": {"params_m": 5.4, "top1": 75.2, "ms": 8.2, "memory_mb": 23},
                  "mobilevit_s": {"params_m": 5.8, "top1": 78.4, "ms": 9.4, "memory_mb": 27}}
GUIDE_SECTION5 = {"pretrained as is": 68.2, "full fine-tune": 89.7, "head only": 82.3, "distillation": 91.5}
GUIDE_SECTION6 = {"fp32": {"file_mb": 27.3, "memory_mb": 142, "ms": 9.4},
                  "dynamic int8": {"file_mb": 9.8, "memory_mb": 89, "ms": 7.1, "top1_drop_pt": "< 0.5"}}
GUIDE_SECTION7 = {"mobilevit_s": ("MobileViT", 5.8, 78.4, 9.4),
                  "tf_efficientnet_lite0": ("EfficientNet-Lite", 4.3, 75.1, 6.8),
                  "edgevit_xxs": ("EdgeViT", 6.1, 79.2, 11.3),
                  "mobile_former_96m": ("Mobile-Former", 5.6, 77.7, 10.1)}


def budget_of(args):
    from mvkit.bench.compare import CompareBudget

    return CompareBudget(epochs=args.epochs, img_size=args.img_size, formats=("onnx", "executorch"),
                         bench_rounds=args.rounds, verify_photos=None)


def run_compare(args) -> dict:
    from mvkit.bench.compare import compare

    out = Path(args.out) / "compare"
    compare(args.models, str(FLOWERS), out, budget_of(args), retime=args.retime, log=lambda text: print(text, flush=True))
    return json.loads((out / "compare.json").read_text())


def artifact_of(model: dict, fmt: str, precision: str) -> str:
    return next(a["artifact"] for a in model["artifacts"] if a["format"] == fmt and a["precision"] == precision)


def run_compression(args, compared: dict) -> list[dict]:
    """Section 6 on the compared MobileViT-S: every compression mvkit has, with size, peak memory, latency and
    accuracy on all val photos (Core ML: accuracy and size in mvkit's interpreter, no latency: no Apple device)."""
    from mvkit.bench import add_accuracy, bench
    from mvkit.compress import plan_quantize, quantize
    from mvkit.data import load_data
    from mvkit.data.datasets import take_evenly
    from mvkit.export import export
    from mvkit.verify import verify

    model = next(m for m in compared["models"] if m["model"] == "mobilevit_s")
    checkpoint = Path(model["checkpoint"])
    out = Path(args.out) / "compression"
    out.mkdir(parents=True, exist_ok=True)
    print("mobilevit_s: dynamic int8 (Linear layers)", flush=True)
    dynamic = quantize(plan_quantize(checkpoint, "dynamic", ["torchscript"], None)[0], checkpoint, None).path
    timed = {"fp32": ("PyTorch eager", str(checkpoint)),
             "fp32 ": ("ONNX Runtime", artifact_of(model, "onnx", "fp32")),
             "fp32  ": ("ExecuTorch XNNPACK", artifact_of(model, "executorch", "fp32")),
             "dynamic int8 (Linear only)": ("PyTorch eager", str(dynamic)),
             "static int8": ("ONNX Runtime", artifact_of(model, "onnx", "int8")),
             "static int8 ": ("ExecuTorch XNNPACK", artifact_of(model, "executorch", "int8"))}
    val = take_evenly(load_data(str(FLOWERS)).val, 8)
    print("mobilevit_s: timing the compressed artifacts", flush=True)
    rows = bench([path for _, path in timed.values()], [val.image(i) for i in range(len(val))], rounds=args.rounds)
    add_accuracy(rows, str(FLOWERS))
    reference = next(r for r in rows if r.format == "safetensors")
    table = [{"variant": variant.strip(), "runtime": runtime, "file_mb": row.file_mb, "peak_memory_mb": row.peak_rss_mb,
              "p50_ms": row.latency_p50_ms, "val_top1": row.top1, "top1_change_pt": _points(row.top1, reference.top1),
              "agreement_with_fp32": row.agreement, "artifact": Path(path).name}
             for (variant, (runtime, path)), row in zip(timed.items(), rows)]
    for variant, options in (("Core ML fp16", {}), ("Core ML 8-bit weights", {"compression": "int8"}),
                             ("Core ML palettized 6-bit", {"compression": "palettize6"})):
        print(f"mobilevit_s: {variant}", flush=True)
        path = export(checkpoint, "coreml", out, **options).path
        report = verify(path, str(FLOWERS), limit=args.coreml_photos)
        table.append({"variant": variant, "runtime": "mvkit's Core ML interpreter (numpy)",
                      "file_mb": round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 2),
                      "peak_memory_mb": None, "p50_ms": None, "val_top1": report.artifact_top1,
                      "top1_change_pt": _points(report.artifact_top1, report.reference_top1),
                      "agreement_with_fp32": report.agreement, "artifact": path.name,
                      "photos": report.count})
    return table


def _points(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else round(100 * (value - base), 2)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def imagenet_shape(timm_name: str) -> tuple[float, float]:
    """(params M, GMACs) of the ImageNet model (1,000 classes, 224 px): the figures papers and the guide quote."""
    from mvkit.models.zoo import count_macs

    params, macs, _ = count_macs(timm_name, 224, num_classes=1000)
    return round(params / 1e6, 2), round(macs / 1e9, 3)


def section1(compared: dict) -> dict:
    rows = {r["model"]: r for r in compared["rows"]}
    base = rows["mobilenetv3_large_100"]["fastest_p50_ms"]
    table = []
    for name, guide in GUIDE_SECTION1.items():
        row = rows[name]
        table.append({
            "model": name, "guide params M": guide["params_m"], "params M (1000 classes)": imagenet_shape(name)[0],
            "guide ImageNet top-1 %": guide["top1"], "published ImageNet top-1 %": row["published_imagenet_top1"],
            "guide iPhone 12 ms": guide["ms"], "fastest verified runtime here": row["fastest"],
            f"p50 ms here ({row['input_size']} px)": row["fastest_p50_ms"],
            "guide latency vs MobileNetV3": round(guide["ms"] / GUIDE_SECTION1["mobilenetv3_large_100"]["ms"], 2),
            "latency vs MobileNetV3 here": _ratio(row["fastest_p50_ms"], base),
            "guide memory MB": guide["memory_mb"], "peak RSS MB here": _round(row["fastest_peak_rss_mb"], 0),
            "flowers val top-1 % here": _pct(row["val_top1"]), "how trained here": row["strategy"]})
    vit, cnn = table[1], table[0]
    notes = [
        f"Latency: the guide has MobileViT-S {vit['guide latency vs MobileNetV3']}x MobileNetV3's time on an iPhone 12; "
        f"here, each in its fastest verified runtime on this CPU (int8 within 1 point of its checkpoint), it is {vit['latency vs MobileNetV3 here']}x.",
        f"Parameters: the guide says {GUIDE_SECTION1['mobilevit_s']['params_m']} M for MobileViT-S and "
        f"{GUIDE_SECTION1['mobilenetv3_large_100']['params_m']} M for MobileNetV3; the models built here with ImageNet's "
        f"1,000 classes have {vit['params M (1000 classes)']} M and {cnn['params M (1000 classes)']} M (the MobileViT "
        "paper: 5.6 M).",
        "Memory: the guide's figures are app readings on the phone; here it is the peak resident memory of a process "
        "that loads the runtime, the model and runs it (so it includes the runtime's own libraries).",
        "Accuracy: ImageNet top-1 is published, not measured. The flowers column is measured after the same short "
        f"budget ({compared['budget']['epochs']} epochs); neither model has ImageNet weights offline, so both start "
        "from scratch and the gap says more about how fast each trains than about the guide's claim.",
    ]
    return {"title": "Guide section 1: MobileNetV3 vs MobileViT-S", "rows": table, "notes": notes}


def section5() -> dict:
    from finetune_flowers import TITLES

    runs = json.loads((RESULTS / "finetune_flowers.json").read_text())["rows"]

    def measured(name: str) -> dict:
        run = runs[name]
        return {"val top-1 % here": _pct(run["val_top1"]), "what ran here": TITLES[name],
                "budget here": f"{run['epochs']} epochs at {run['img_size']} px, {run['train_minutes']:.0f} min",
                "params M here": round(run["params_m"], 2)}

    table = [{"guide row": "pretrained as is", "guide top-1 %": GUIDE_SECTION5["pretrained as is"],
              "val top-1 % here": None, "what ran here": "n/a: ImageNet's classes hold only one of the five "
              "flower classes (daisy)", "budget here": "-", "params M here": None},
             {"guide row": "full fine-tune", "guide top-1 %": GUIDE_SECTION5["full fine-tune"], **measured("finetune")},
             {"guide row": "head only", "guide top-1 %": GUIDE_SECTION5["head only"], **measured("head_only")},
             {"guide row": "distillation", "guide top-1 %": GUIDE_SECTION5["distillation"], **measured("distilled")},
             {"guide row": "(not in the guide) from scratch", "guide top-1 %": None, **measured("scratch")}]
    finetune = runs["finetune"]
    notes = [
        "The guide's rows are MobileViT-S (5.8 M, ImageNet-pretrained) on its flower set, 50-100 epochs; no pretrained "
        "MobileViT exists offline here, so the fine-tune rows use the built-in pretrained EfficientNet-Lite0, and "
        "the distillation row is MobileViT-XXS distilled from the fine-tuned Lite0 (the guide's teacher: DeiT-base).",
        f"Full fine-tune: {table[1]['val top-1 % here']}% here against the guide's 89.7%, after {finetune['epochs']} "
        f"epochs at {finetune['img_size']} px (the photos' size) on the CPU with the `finetune` preset; 18 "
        "variants of it on a GPU (longer, larger, more augmented) kept at most 83.2% (BENCHMARKS.md, \"How the "
        f"presets were chosen\"). Head only {table[2]['val top-1 % here']}% against 82.3% (a linear head on these "
        "frozen features tops out near 77.4%).",
        f"Distillation helps here as in the guide: {table[3]['val top-1 % here']}% distilled against "
        f"{table[4]['val top-1 % here']}% for the same student from scratch, but it does not beat the teacher.",
        "Source: benchmarks/results/finetune_flowers.json; each row's command is in the fine-tuning table above.",
    ]
    return {"title": "Guide section 5: fine-tuning on flowers", "rows": table, "notes": notes}


def section6(compression: list[dict]) -> dict:
    table = []
    for row in compression:
        guide = GUIDE_SECTION6.get(row["variant"].removesuffix(" (Linear only)")) if row["runtime"] == "PyTorch eager" else None
        table.append({"variant": row["variant"], "runtime": row["runtime"], "file MB": _round(row["file_mb"], 1),
                      "guide file MB": guide and guide["file_mb"], "peak MB": _round(row["peak_memory_mb"], 0),
                      "guide memory MB": guide and guide["memory_mb"], "p50 ms": _round(row["p50_ms"], 2),
                      "guide ms": guide and guide["ms"], "val photos": row.get("photos", 698),
                      "val top-1 %": _pct(row["val_top1"]),
                      "top-1 change pt": row["top1_change_pt"], "guide top-1 change": guide and guide.get("top1_drop_pt"),
                      "agreement with fp32 %": _pct(row["agreement_with_fp32"])})
    fp32, dynamic = table[0], next(r for r in table if r["variant"].startswith("dynamic"))
    static = [r for r in table if r["variant"] == "static int8"]
    fastest = min(static, key=lambda r: r["p50 ms"])
    notes = [
        f"Dynamic int8 (the guide's method, Linear layers only): the guide has the file {27.3 / 9.8:.1f}x smaller and "
        f"{9.4 / 7.1:.2f}x faster; here it is {_ratio(fp32['file MB'], dynamic['file MB'])}x smaller and "
        f"{_ratio(fp32['p50 ms'], dynamic['p50 ms'])}x faster, because MobileViT-S keeps most of its weights and "
        "time in convolutions, which dynamic quantization leaves in float.",
        f"Static int8 (calibrated on real photos) is the one that pays on this CPU: {fastest['runtime']} int8 runs "
        f"{_ratio(fp32['p50 ms'], fastest['p50 ms'])}x faster than eager fp32 with a top-1 change of "
        f"{fastest['top-1 change pt']} pt.",
        "Memory: the guide's 142 -> 89 MB are app readings on the phone; here, peak resident memory of the process.",
        "Core ML rows run in mvkit's numpy interpreter (no Apple device here): their size and accuracy are real, their "
        "latency is not measured; their top-1 and its change are on the val photos column (spread over the classes), "
        "against the checkpoint on the same photos.",
        "These rows are timed in their own interleaved run (not the comparison's), so compare them with each other.",
    ]
    return {"title": "Guide section 6: compression of MobileViT-S", "rows": table, "notes": notes}


def section7(compared: dict) -> dict:
    from mvkit.bench.compare import PUBLISHED_TOP1

    rows = {r["model"]: r for r in compared["rows"]}
    base, guide_base = rows["mobilevit_s"]["fastest_p50_ms"], GUIDE_SECTION7["mobilevit_s"][3]
    table = []
    for name, (family, params, top1, ms) in GUIDE_SECTION7.items():
        row = rows[name]
        shape = imagenet_shape(name)
        table.append({"family": family, "guide params M": params, "guide top-1 %": top1, "guide ms": ms,
                      "variant here": name, "params M (1000 classes)": shape[0], "GMACs (224 px)": shape[1],
                      "published top-1 %": PUBLISHED_TOP1[name][0], "flowers val top-1 % here": _pct(row["val_top1"]),
                      "how trained here": row["strategy"], "fastest verified runtime here": row["fastest"],
                      "p50 ms here": row["fastest_p50_ms"], "guide latency vs MobileViT": round(ms / guide_base, 2),
                      "latency vs MobileViT-S here": _ratio(row["fastest_p50_ms"], base)})
    order_guide = [r["family"] for r in sorted(table, key=lambda r: r["guide ms"])]
    order_here = [r["family"] for r in sorted(table, key=lambda r: r["p50 ms here"])]
    notes = [
        f"Latency order, fastest first: guide {' < '.join(order_guide)}; here {' < '.join(order_here)}.",
        "The guide's EdgeViT (6.1 M, 79.2%) and Mobile-Former (5.6 M, 77.7%) match no published variant (EdgeViT-XS "
        "is 6.7 M / 77.5%, Mobile-Former-294M 11.4 M / 77.9%); the smallest variants were measured here "
        "(EdgeViT-XXS, Mobile-Former-96M) to keep the training budget on 2 cores.",
        "Only EfficientNet-Lite0 has ImageNet weights offline; the others train from scratch for the same epochs, so "
        "the flowers column ranks how far each gets in a short budget, not the families' ImageNet accuracy.",
    ]
    return {"title": "Guide section 7: alternatives", "rows": table, "notes": notes}


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("-" if row[c] is None else str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores, torch {__import__('torch').__version__}"


def write_tables(args) -> None:
    from mvkit.bench.compare import CompareBudget, markdown as compare_markdown

    compared = json.loads((RESULTS / "guide_compare.json").read_text())
    compression = json.loads((RESULTS / "guide_compression.json").read_text())
    command = compared["measured_by"]  # the run that measured (tables can be rebuilt with --only tables)
    budget = compared["budget"]
    comparison = {"title": "mvkit compare on flowers128", "rows": compared["rows"],
                  "notes": [f"Budget: {budget['epochs']} epochs at {budget['img_size']} px, batch "
                            f"{budget['batch_size']}, per model; latency batch 1, {budget['bench_rounds']} interleaved "
                            "rounds; accuracy on all 698 val photos."]}
    for suffix in (".png", ".svg"):  # the chart beside the results, for BENCHMARKS.md and the report
        chart = Path(args.out) / "compare" / f"pareto{suffix}"
        if chart.exists():  # else the copy made when compare ran (the run folder may be gone)
            shutil.copy(chart, RESULTS / f"guide_pareto{suffix}")
    comparison["images"] = ["guide_pareto.svg"]
    tables = [comparison, section1(compared), section5(), section6(compression), section7(compared)]
    for table in tables:
        table["command"] = command
    measured_on = compared.get("machine", "not recorded")  # where compare ran, not where the tables are rebuilt
    (RESULTS / "guide_tables.json").write_text(json.dumps({"machine": measured_on, "tables": tables}, indent=1))
    parts = ["## The guide's tables, measured here (sections 1, 5, 6, 7)", "",
             f"Machine: {measured_on}. Command: `{command}`. Data: ../shared/data/flowers128, seeded 80/20 split.", ""]
    for table in tables:
        rows = compare_markdown(table["rows"], compared["data"], CompareBudget(**{**budget, "formats": tuple(
            budget["formats"])})) if table is comparison else markdown_table(table["rows"])
        parts += [f"### {table['title']}", "", rows, "", *[f"- {note}" for note in table["notes"]], ""]
    parts += ["![accuracy vs latency](benchmarks/results/guide_pareto.png)", "",
              "All of it as one page: `mvkit report benchmarks/results/guide_tables.json --out guide.html`."]
    replace_section("guide_tables", "\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["compare", "compression", "tables"], default=None)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--retime", action="store_true")
    parser.add_argument("--coreml-photos", type=int, default=300, help="val photos per Core ML variant")
    parser.add_argument("--out", default=str(REPO / "runs" / "guide"))
    args = parser.parse_args()
    if not FLOWERS.is_dir():
        raise SystemExit(f"error: {FLOWERS} is missing (see ../shared/data/README.md)")
    if args.only in (None, "compare", "compression"):
        compared = {**run_compare(args), "measured_by": "python benchmarks/guide_tables.py " + shlex.join(sys.argv[1:]),
                    "machine": machine()}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "guide_compare.json").write_text(json.dumps(compared, indent=1))
    if args.only in (None, "compression"):
        compression = run_compression(args, compared)
        (RESULTS / "guide_compression.json").write_text(json.dumps(compression, indent=1))
    if args.only in (None, "tables"):
        write_tables(args)


if __name__ == "__main__":
    main()
