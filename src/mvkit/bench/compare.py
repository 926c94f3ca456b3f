"""`mvkit compare`: model families side by side on the same machine and data (the guide's sections 1 and 7).

Each model is trained on DATA with the same budget (epochs, input size): fine-tuned when pretrained weights are
at hand offline, distilled from `teacher` when one is given, else trained from scratch (the table says which).
Then it is exported (fp32) and quantized (static int8) to each runtime, verified on the val photos and timed at
batch 1 in one interleaved bench run per model. Published ImageNet top-1 is a separate, cited column: it is not
measured here. Results are kept per model (`OUT/<model>/compare.json`), so a model already measured is not redone
unless asked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mvkit.errors import MvkitError
from mvkit.files import check_writable

# ImageNet-1k top-1 (%) as published; cited, never measured here.
PUBLISHED_TOP1 = {
    "mobilevit_xxs": (69.0, "Mehta & Rastegari, MobileViT, ICLR 2022"),
    "mobilevit_xs": (74.8, "Mehta & Rastegari, MobileViT, ICLR 2022"),
    "mobilevit_s": (78.4, "Mehta & Rastegari, MobileViT, ICLR 2022"),
    "mobilenetv3_large_100": (75.2, "Howard et al., Searching for MobileNetV3, ICCV 2019"),
    "mobilenetv3_small_100": (67.4, "Howard et al., Searching for MobileNetV3, ICCV 2019"),
    "tf_efficientnet_lite0": (75.1, "TensorFlow TPU repository, EfficientNet-Lite README"),
    "edgevit_xxs": (74.4, "Pan et al., EdgeViTs, ECCV 2022"),
    "edgevit_xs": (77.5, "Pan et al., EdgeViTs, ECCV 2022"),
    "edgevit_s": (81.0, "Pan et al., EdgeViTs, ECCV 2022"),
    **{f"mobile_former_{m}m": (top1, "Chen et al., Mobile-Former, CVPR 2022")
       for m, top1 in ((26, 64.0), (52, 68.7), (96, 72.8), (151, 75.2), (214, 76.7), (294, 77.9), (508, 79.3))},
}


@dataclass(frozen=True)
class CompareBudget:
    epochs: int = 3
    img_size: int = 128
    batch_size: int = 32
    teacher: str | None = None
    formats: tuple[str, ...] = ("onnx", "executorch")
    int8: bool = True
    calibration_photos: int = 128
    bench_rounds: int = 20
    verify_photos: int | None = 300

    def to_dict(self) -> dict:
        return {**self.__dict__, "formats": list(self.formats)}


def strategy_for(model: str, teacher: str | None) -> tuple[str, str]:
    """(recipe preset, what the table says) for a model: pretrained weights at hand offline -> fine-tune."""
    from mvkit.models.zoo import builtin_weights_path, local_weights_path, resolve_name

    timm_name = resolve_name(model)
    distilled = f", distilled from {Path(teacher).name}" if teacher else ""
    if builtin_weights_path(timm_name) or local_weights_path(timm_name):
        return "finetune", "fine-tuned from ImageNet weights" + distilled
    return "scratch", "from scratch" + distilled


def formats_to_time(given: list[str], int8: bool) -> tuple[str, ...]:
    """-f as typed; "all": every installed format that exports and runs here and, with int8, has static int8."""
    from mvkit.formats import FORMATS, available_formats, format_names

    names = format_names(given)
    if "all" in names:
        return tuple(fmt for fmt in available_formats() if FORMATS[fmt].can_run() and (not int8 or "ptq" in FORMATS[fmt].int8))
    return tuple(names)


def check_compare(models: list[str], data: str, budget: CompareBudget) -> None:
    """Every check before any training: names, data, formats, teacher."""
    from mvkit.data.datasets import check_data_spec
    from mvkit.formats import get_format
    from mvkit.models.zoo import resolve_name

    if not models:
        raise MvkitError("give at least one model to compare")
    if len(set(models)) != len(models):
        raise MvkitError(f"a model is named twice: {', '.join(models)}")
    for model in models:
        resolve_name(model)
    check_data_spec(data, "--data")
    for fmt in budget.formats:
        row = get_format(fmt)
        row.require_export()
        row.require_runtime()
        if budget.int8 and "ptq" not in row.int8:
            raise MvkitError(f"{fmt} has no static int8 method; leave it out or use --no-int8")
    if budget.epochs < 1:
        raise MvkitError(f"--epochs must be at least 1, not {budget.epochs}")
    if budget.img_size < 32:
        raise MvkitError(f"--img-size must be at least 32, not {budget.img_size}")
    if budget.teacher and not Path(budget.teacher).exists():
        raise MvkitError(f"--teacher {budget.teacher}: give a checkpoint fine-tuned on this data (from mvkit train)")


def training_recipe(model: str, data: str, out: Path, budget: CompareBudget):
    """The recipe `model` trains with under `budget`: its preset's values as this mvkit version sets them."""
    from mvkit.train.recipe import build_recipe

    preset, _ = strategy_for(model, budget.teacher)
    return build_recipe(preset, model=model, data=data, out=str(out / "train"), epochs=budget.epochs,
                        img_size=budget.img_size, batch_size=budget.batch_size, pretrained=preset == "finetune",
                        teacher=budget.teacher, patience=None)


def same_recipe(saved: dict | None, recipe) -> bool:
    """Whether a recipe saved with a result is `recipe`. A key the saved one lacks is a recipe field added since,
    which that run trained with at its default."""
    from mvkit.train.recipe import TrainRecipe

    return saved is not None and {**TrainRecipe().to_dict(), **saved} == recipe.to_dict()


def measure_model(model: str, data: str, out: Path, budget: CompareBudget,
                  log: Callable[[str], None] = lambda text: None,
                  status: Callable[[str], None] = lambda text: None) -> dict:
    """Train, export, quantize, verify and time one model; the result is written to out/compare.json."""
    from mvkit.compress import plan_quantize, quantize
    from mvkit.data import load_data
    from mvkit.export import export
    from mvkit.models.zoo import count_macs, resolve_name
    from mvkit.train import TrainUI, train

    _, strategy = strategy_for(model, budget.teacher)
    recipe = training_recipe(model, data, out, budget)
    step = f"{model}: training ({strategy}, {_epochs(budget)} at {budget.img_size} px)"
    log(step)

    def start_epoch(epoch: int, epochs: int, batches: int) -> Callable[[int, dict[str, float]], None]:
        return lambda done, stats: status(f"{step}: epoch {epoch + 1}/{epochs}, batch {done}/{batches}, "
                                          f"loss {stats['loss']:.3f}")
    # compare keeps or redoes a model's measurement itself (--redo, --retime), so it overwrites the run folder
    trained = train(recipe, overwrite=True, ui=TrainUI(start_epoch=start_epoch))
    checkpoint = trained.best_checkpoint
    artifacts = [checkpoint]
    for fmt in budget.formats:
        log(f"{model}: export {fmt}")
        artifacts.append(export(checkpoint, fmt, out).path)
    if budget.int8:
        log(f"{model}: static int8 ({', '.join(budget.formats)})")
        for plan in plan_quantize(checkpoint, "ptq", list(budget.formats), data):
            artifacts.append(quantize(plan, checkpoint, data, count=budget.calibration_photos).path)
    splits = load_data(data)
    params, macs, size = count_macs(resolve_name(model), budget.img_size, num_classes=len(splits.classes))
    published = PUBLISHED_TOP1.get(resolve_name(model))
    result = {
        "model": model, "timm_name": resolve_name(model), "strategy": strategy, "budget": budget.to_dict(),
        "recipe": recipe.to_dict(),
        "batch_size": trained.recipe.batch_size,  # the budget's, or all the training photos when fewer
        # the model as trained (its head has DATA's classes), at the budget's input size
        "params_m": round(params / 1e6, 3), "gmacs": round(macs / 1e9, 4), "input_size": size,
        "val_top1": trained.val_top1, "val_photos": len(splits.val),
        "train_images_per_second": round(trained.train_images_per_second, 1),
        "checkpoint": str(checkpoint),
        "published_imagenet_top1": published[0] if published else None,
        "published_source": published[1] if published else None,
    }
    return time_and_score(result, artifacts, data, out, budget, log)


def time_and_score(result: dict, artifacts: list, data: str, out: Path, budget: CompareBudget,
                   log: Callable[[str], None] = lambda text: None) -> dict:
    """Time the artifacts side by side (one interleaved bench run) and score them on the val photos; the result is
    written to out/compare.json. `--retime` comes back here with the artifacts of an earlier run."""
    from mvkit.bench import add_accuracy, bench
    from mvkit.data import load_data
    from mvkit.data.datasets import take_evenly

    val = take_evenly(load_data(data).val, 8)
    photos = [val.image(i) for i in range(len(val))]
    log(f"{result['model']}: timing {len(artifacts)} artifacts")
    rows = bench(artifacts, photos, rounds=budget.bench_rounds)
    log(f"{result['model']}: accuracy on val photos")
    add_accuracy(rows, data, limit=budget.verify_photos)
    result = {**result, "artifacts": [{**row.to_dict(), "precision": _precision(row.artifact)} for row in rows]}
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    return result


def _precision(path: str) -> str:
    return "int8" if "int8" in Path(path).name else "fp32"


def compare(models: list[str], data: str, out: Path, budget: CompareBudget, redo: bool = False,
            retime: bool = False, log: Callable[[str], None] = lambda text: None,
            status: Callable[[str], None] = lambda text: None) -> list[dict]:
    """Measure each model (or reuse what out/<model>/compare.json holds from an earlier run with the same budget and
    training recipe; `retime` keeps its trained and exported files but times and scores them again), then write the
    table (markdown, JSON, CSV) and the Pareto chart (PNG, SVG) into `out`. `log` gets each step, `status` where
    training is, batch by batch (for a status line, not a log)."""
    check_compare(models, data, budget)
    check_writable(out)
    results = []
    for model in models:
        folder = out / model.replace("/", "_")
        saved = folder / "compare.json"
        if saved.exists() and not redo:
            previous = json.loads(saved.read_text())
            kept = [a["artifact"] for a in previous.get("artifacts", [])]
            # a result counts as measured only under the same budget and training recipe: a preset that changed
            # since (or a result saved before results recorded their recipe) is measured again
            same = (previous.get("budget") == budget.to_dict()
                    and same_recipe(previous.get("recipe"), training_recipe(model, data, folder, budget)))
            if same and retime and all(Path(p).exists() for p in kept):
                results.append(time_and_score(previous, kept, data, folder, budget, log))
                continue
            if same and not retime:
                log(f"{model}: measured before ({saved}); --redo measures again, --retime times again")
                results.append(previous)
                continue
            if not same:
                log(f"{model}: measured before with another budget or training recipe; measuring again")
        folder.mkdir(parents=True, exist_ok=True)
        results.append(measure_model(model, data, folder, budget, log, status))
    rows = table_rows(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"data": data, "budget": budget.to_dict(), "rows": rows,
                                                   "models": results}, indent=1))
    (out / "compare.md").write_text(markdown(rows, data, budget) + "\n")
    (out / "compare.csv").write_text(to_csv(rows))
    pareto_chart(rows, out / "pareto")
    return rows


def table_rows(results: list[dict]) -> list[dict]:
    """One row per model: the checkpoint's accuracy, each runtime's p50 (fp32 and int8), the fastest artifact that
    passes verification (bench's rule) and its memory, file size and accuracy."""
    from mvkit.bench import passes_verification

    rows = []
    for result in results:
        timed = [a for a in result["artifacts"] if a["latency_p50_ms"] is not None and a["format"] != "safetensors"]
        latency = {f"{a['format']} {a['precision']} p50 ms": round(a["latency_p50_ms"], 2) for a in timed}
        ran_as = {f"{a['format']} {a['precision']} ran as": a["runtime"] for a in timed if a.get("runtime")}
        eager = next((a for a in result["artifacts"] if a["format"] == "safetensors"), None)
        shippable = [a for a in timed if passes_verification(a["status"], a["precision"] == "int8", a["top1"],
                                                             eager["top1"] if eager else None)]
        fastest = min(shippable, key=lambda a: a["latency_p50_ms"]) if shippable else None
        rows.append({
            "model": result["model"], "strategy": result["strategy"], "params_m": result["params_m"],
            "gmacs": result["gmacs"], "input_size": result["input_size"],
            "batch_size": result.get("batch_size", result["budget"]["batch_size"]),  # older results lack it
            "val_top1": round(result["val_top1"], 4),
            "val_photos": result.get("val_photos"),  # older results lack it
            "eager p50 ms": round(eager["latency_p50_ms"], 2) if eager and eager["latency_p50_ms"] else None,
            **latency,
            **ran_as,  # a Core ML package off macOS runs in mvkit's numpy interpreter: its column says so
            "fastest": f"{fastest['format']} {fastest['precision']}" if fastest else None,
            "fastest_p50_ms": round(fastest["latency_p50_ms"], 2) if fastest else None,
            "fastest_top1": fastest["top1"] if fastest else None,
            # the checkpoint's top-1 on the photos the fastest was scored on: its budget is measured against this
            "fastest_reference_top1": eager["top1"] if fastest and eager else None,
            "fastest_peak_rss_mb": fastest["peak_rss_mb"] if fastest else None,
            "fp32_file_mb": next((a["file_mb"] for a in timed if a["precision"] == "fp32"), None),
            "published_imagenet_top1": result["published_imagenet_top1"],
            "published_source": result["published_source"],
        })
    return rows


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _fastest_top1(row: dict) -> str:
    """The shipped file's top-1 beside its checkpoint's on the same val photos, which can be fewer than the val
    top-1 column's: a reader compares the two within one cell."""
    reference = row.get("fastest_reference_top1")  # older results lack it
    return _percent(row["fastest_top1"]) + (f" ({_percent(reference)})" if reference is not None else "")


def _epochs(budget) -> str:
    return f"{budget.epochs} epoch" + ("" if budget.epochs == 1 else "s")


def markdown(rows: list[dict], data: str, budget: CompareBudget) -> str:
    latency_columns = sorted({key for row in rows for key in row if key.endswith(" p50 ms")})
    header = ["model", "how trained", "params M", f"GMACs ({budget.img_size} px)", "val top-1 (measured)",
              *latency_columns, "fastest verified", "its top-1 (checkpoint's on the same photos)", "its peak MB",
              "fp32 file MB",
              "ImageNet top-1 (published, not measured)"]
    batches = sorted({row["batch_size"] for row in rows} or {budget.batch_size})
    lines = [f"Data: {data}; budget: {_epochs(budget)} at {budget.img_size} px, batch "
             f"{'/'.join(map(str, batches))}; "
             f"latency: batch 1, {budget.bench_rounds} interleaved rounds, median; accuracy of int8 and exported "
             f"files on {'all' if budget.verify_photos is None else f'up to {budget.verify_photos}'} val photos."
             + _few_photos_note(rows) + _ran_as_note(latency_columns, rows), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        published = f"{row['published_imagenet_top1']}% ({row['published_source']})" \
            if row["published_imagenet_top1"] is not None else "-"
        cells = [row["model"], row["strategy"], _number(row["params_m"]), _number(row["gmacs"], 3),
                 _percent(row["val_top1"]), *[_number(row.get(c)) for c in latency_columns], row["fastest"] or "-",
                 _fastest_top1(row), _number(row["fastest_peak_rss_mb"], 0), _number(row["fp32_file_mb"], 1),
                 published]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ran_as_note(latency_columns: list[str], rows: list[dict]) -> str:
    """What ran each latency column (results saved before runtimes were recorded have none)."""
    named = []
    for column in latency_columns:
        key = column.replace(" p50 ms", " ran as")
        runtime = next((row[key] for row in rows if row.get(key)), None)
        if runtime:
            named.append(f"{column.removesuffix(' p50 ms')}: {runtime}")
    return f" Ran as: {'; '.join(named)}." if named else ""


def _few_photos_note(rows: list[dict]) -> str:
    """The table says so beside its accuracies when the val photos are too few to rank models by them."""
    from mvkit.evaluate import few_photos_note

    counts = [row["val_photos"] for row in rows if row.get("val_photos")]
    note = few_photos_note(min(counts)) if counts else None
    return f" Note: {note} (val), so differences that small are noise." if note else ""


def to_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def pareto_front(rows: list[dict]) -> list[dict]:
    """The models no other model beats on both latency and accuracy."""
    points = [r for r in rows if r["fastest_p50_ms"] is not None and r["fastest_top1"] is not None]
    return [r for r in points if not any(
        o is not r and o["fastest_p50_ms"] <= r["fastest_p50_ms"] and o["fastest_top1"] >= r["fastest_top1"]
        and (o["fastest_p50_ms"] < r["fastest_p50_ms"] or o["fastest_top1"] > r["fastest_top1"]) for o in points)]


def pareto_chart(rows: list[dict], stem: Path) -> list[Path]:
    """Accuracy against latency of each model's fastest artifact, marker area by file size; the front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["fastest_p50_ms"] is not None and r["fastest_top1"] is not None]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in points:
        area = 30 + 12 * (row["fp32_file_mb"] or 1)
        axes.scatter(row["fastest_p50_ms"], 100 * row["fastest_top1"], s=area, alpha=0.6)
        axes.annotate(f"{row['model']}\n({row['fastest']})", (row["fastest_p50_ms"], 100 * row["fastest_top1"]),
                      fontsize=7, xytext=(5, 5), textcoords="offset points")
    front = sorted(pareto_front(points), key=lambda r: r["fastest_p50_ms"])
    if len(front) > 1:
        axes.plot([r["fastest_p50_ms"] for r in front], [100 * r["fastest_top1"] for r in front], "k--", lw=1,
                  label="Pareto front")
        axes.legend(loc="lower right")
    axes.set_xlabel("latency p50, batch 1, fastest runtime (ms)")
    axes.set_ylabel("val top-1 (%)")
    axes.set_title("accuracy vs latency (marker area: fp32 file size)")
    axes.grid(alpha=0.3)
    axes.margins(0.2)
    figure.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=130)
    plt.close(figure)
    return paths
