"""The `mvkit` command line: parse options, call the Python API, print. No logic of its own."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text
from rich.table import Table

from mvkit.errors import MvkitError
from mvkit.files import check_file_out, check_writable
from mvkit.formats import FORMATS, exportable, format_names, int8_formats

app = typer.Typer(
    help="mvkit: from labeled photos to a verified, benchmarked on-device image classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup is off: labels and paths such as "tulip [red]" print as they are; styled lines pass markup=True.
console = Console(soft_wrap=True, markup=False)  # long paths stay on one line when piped
error_console = Console(stderr=True, soft_wrap=True, markup=False)


# A missing file is refused while the command line is parsed: a command's imports (torch, timm) took 4-8 s before
# "does not exist", and a missing checkpoint was called an unknown model name.
def _model_files_exist(value):
    """MODEL arguments (a name, or a file named by its suffix)."""
    from mvkit.artifact import refuse_missing_file

    for item in value if isinstance(value, list) else [value]:
        if item is not None:
            refuse_missing_file(item)
    return value


def _paths_exist(value):
    """Arguments that can only be files."""
    for item in value if isinstance(value, list) else [value]:
        if item is not None and not Path(item).exists():
            raise MvkitError(f"{item} does not exist")
    return value


ModelArg = typer.Argument(..., callback=_model_files_exist, help="A zoo or timm model name (see `mvkit models`), or an mvkit checkpoint (.safetensors with its .mvkit.json sidecar).")
ARTIFACT_KINDS = ", ".join(f"{row.suffix} ({name})" for name, row in FORMATS.items() if row.exporter)
ArtifactArg = typer.Argument(..., callback=_model_files_exist, help=f"A zoo/timm model name, an mvkit checkpoint, or an exported artifact with its sidecar: {ARTIFACT_KINDS}.")
PretrainedOpt = typer.Option(False, "--pretrained", help="Load pretrained weights: built-in, then the local weights folder, then timm's hub.")
WeightsOpt = typer.Option(None, "--weights", help="Weights file: timm/safetensors state dict, Apple ml-cvnets MobileViT or lukemelas EfficientNet checkpoint.")


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                              help="Show third-party libraries' output and log messages.")) -> None:
    """Without -v, libraries' output goes to a log file (see mvkit.quiet); mvkit's own warnings still show."""


def print_json(data) -> None:
    """JSON on standard output, nothing else (no markup, no wrapping)."""
    console.file.write(json.dumps(data, indent=2) + "\n")
    console.file.flush()


class CountColumn(MofNCompleteColumn):
    """done/total, and nothing for work without a count (a conversion, a dynamic quantization), where rich's own
    column shows "0/?"."""

    def render(self, task) -> Text:
        return Text("") if task.total is None else super().render(task)


class RemainingColumn(TimeRemainingColumn):
    """Time left, and nothing for work without a count, where rich's own column shows "-:--:--"."""

    def render(self, task) -> Text:
        return Text("") if task.total is None else super().render(task)


def bar_columns() -> tuple:
    """What each of mvkit's progress bars shows: the job, its bar, done/total, time taken and time left."""
    return TextColumn("{task.description}"), BarColumn(), CountColumn(), TimeElapsedColumn(), RemainingColumn()


@contextmanager
def deferred_progress(*columns, transient: bool = False) -> Iterator[Progress]:
    """A rich Progress that shows from its `start()` on, not before: a job refused before its work prints its error
    line alone, and a short one no bar at all."""
    progress = Progress(*columns, console=error_console, transient=transient)
    try:
        yield progress
    finally:
        if progress.live.is_started:
            progress.stop()


@contextmanager
def progress_bars() -> Iterator[Callable[..., Callable[[int], None]]]:
    """Yields start(description, total, wait=False) -> advance(n); each call adds a rich progress bar. With `wait` the
    bars show from the bar's first advance on: a job refused before that (a class the model does not know) prints
    its error line alone."""
    with deferred_progress(*bar_columns()) as progress:
        def show() -> None:
            if not progress.live.is_started:
                progress.start()

        def start(description: str, total: Optional[int], wait: bool = False) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            if not wait:
                show()

            def advance(n: int) -> None:
                show()
                progress.advance(task, n)
            return advance
        yield start


def _report_skipped(skipped: list) -> None:
    if skipped:
        error_console.print(f"[yellow]skipped {len(skipped)} unreadable file(s):[/yellow]", markup=True)
        for path, reason in skipped:
            error_console.print(f"  {path}: {reason}")


@app.command("models")
def models_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the model zoo: params, MACs at the default input size, normalization, weights source."""
    from mvkit.models import describe_zoo

    rows = describe_zoo()
    if as_json:
        print_json(rows)
        return
    if not console.is_terminal:  # piped: one plain tab-separated line per model, no table borders to wrap
        console.file.write("name\trole\tparams_m\tgmacs\tinput\tnormalization\tpretrained weights\n")
        for row in rows:
            console.file.write("\t".join(str(row[k]) for k in ("name", "role", "params_m", "gmacs", "input_size",
                                                                "normalization", "weights")) + "\n")
        return
    table = Table(title="mvkit model zoo (any other timm model name works too)")
    for column in ("name", "role", "params M", "GMACs", "input", "normalization", "pretrained weights"):
        table.add_column(column, no_wrap=column == "name")
    for row in rows:
        table.add_row(row["name"], row["role"], f"{row['params_m']:.2f}", f"{row['gmacs']:.3f}",
                      str(row["input_size"]), row["normalization"], row["weights"])
    console.print(table)
    console.print("normalization: imagenet = mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225); "
                  "inception = 0.5 / 0.5; pixels/255 = no mean/std. Full values: --json")


@app.command("predict")
def predict_command(
    model: str = ArtifactArg,
    inputs: List[str] = typer.Argument(..., help="Photos, folders of photos, or http(s) URLs of photos."),
    pretrained: bool = PretrainedOpt,
    weights: Optional[Path] = WeightsOpt,
    topk: int = typer.Option(5, "--topk", "-k", min=1, help="How many labels to show per photo."),
    batch_size: int = typer.Option(16, min=1, help="Photos per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one row per photo to this .parquet, .csv or .jsonl "
                                       "(streamed, resumable: a re-run skips the rows written). INPUT is then one "
                                       "folder tree, a quoted glob, a .csv manifest (path column) or a .txt list (relative paths: from its folder)."),
    engine: str = typer.Option("local", help="With --out: local (worker processes read the photos) or ray "
                               "(Ray Data actors; pip install 'mvkit\\[ray]')."),
    workers: int = typer.Option(2, help="With --out: photo-reading processes (local) or Ray actors."),
    address: Optional[str] = typer.Option(None, help="With --engine ray: an existing cluster (ray start --head "
                                          "prints it); default: a local Ray instance."),
) -> None:
    """Top-k labels with probabilities for a photo or a folder of photos, or a whole photo library into a file."""
    from mvkit.predict import as_predictor, predict_files

    if out is not None:
        if len(inputs) != 1:
            raise MvkitError("--out takes one INPUT: a folder, a quoted glob, a .csv manifest or a .txt list")
        _predict_to_file(model, str(inputs[0]), out, engine, workers, batch_size, topk, address)
        return
    predictor = as_predictor(model, pretrained=pretrained, weights=weights)
    with deferred_progress(*bar_columns(), transient=True) as progress:
        task = progress.add_task("predicting", total=None)

        def start(total: int) -> None:  # more than one batch: a phone's photo takes up to a second to decode
            if total > batch_size:
                progress.update(task, total=total)
                progress.start()

        predictions, skipped = predict_files(predictor, inputs, topk=topk, batch_size=batch_size, on_start=start,
                                             on_progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json({"predictions": [p.to_dict() for p in predictions],
                    "skipped": [{"path": str(p), "reason": r} for p, r in skipped]})
    else:
        for prediction in predictions:
            console.print(f"[bold]{escape(str(prediction.path))}[/bold]", markup=True)
            for label, probability in prediction.top:
                console.print(f"  {probability:7.2%}  {label}")
        _report_skipped(skipped)
    if not predictions:
        raise typer.Exit(1)


def _predict_to_file(model, source, out, engine, workers, batch_size, topk, address) -> None:
    from rich.progress import TaskProgressColumn

    from mvkit.batch import check_job, predict_to_file

    check_job(model, source, out, engine, workers, topk, address)
    columns = (TextColumn("{task.description}"), BarColumn(), CountColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), RemainingColumn())
    with deferred_progress(*columns) as progress:
        task = progress.add_task(f"predict ({engine})", total=None, rate="")

        def start(total, done):  # shown once the job holds its file and knows where it resumes
            progress.update(task, total=total, completed=done)
            progress.start()

        def advance(n):
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:.1f} img/s" if speed else "")

        summary = predict_to_file(model, source, out, engine=engine, workers=workers, batch_size=batch_size,
                                  topk=topk, address=address, on_start=start, on_progress=advance)
    resumed = f", {summary.skipped_done} already done before" if summary.skipped_done else ""
    console.print(f"{summary.out}: {summary.written} rows written{resumed}; {summary.errors} photos "
                  "could not be read (their rows hold the error)")


def _trained_on(model: str, data: str):
    """The artifact `model` when its checkpoint recorded a split of `data` (it was trained on it), else None."""
    from mvkit.artifact import Artifact
    from mvkit.data.datasets import trained_on
    from mvkit.runtime import is_artifact

    if not is_artifact(model):
        return None
    artifact = Artifact.load(Path(model))
    return artifact if trained_on(data, artifact) else None


def _short(path: str) -> str:
    """A path by its last two parts (runs/ft/best.safetensors -> ft/best.safetensors): enough to tell runs apart."""
    return "/".join(Path(path).parts[-2:])


@app.command("eval")
def eval_command(
    model: str = ArtifactArg,
    data: Optional[str] = typer.Argument(None, help="Dataset: a folder of class folders, a CSV manifest (path,label), or builtin:fashion. Default: the data a checkpoint or file was trained on, where it records it."),
    pretrained: bool = PretrainedOpt,
    weights: Optional[Path] = WeightsOpt,
    split: str = typer.Option("val", help="Which part to evaluate: val, train or all."),
    val: Optional[Path] = typer.Option(None, "--val", help="A separate val folder of class folders."),
    val_fraction: Optional[float] = typer.Option(None, help="Share of each class held out for val when the data has "
                                                 "no split (0.2). Default for a model trained on DATA: its own split."),
    seed: Optional[int] = typer.Option(None, help="Seed of the train/val split (0)."),
    split_file: Optional[Path] = typer.Option(None, help="Split file to reuse or write (default OUT/split.json)."),
    out: Path = typer.Option(Path("runs/eval"), help="Folder for metrics.json, confusion.png, split.json."),
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Top-1, top-5 and per-class accuracy, and a confusion-matrix PNG."""
    from mvkit.data import load_data
    from mvkit.data.datasets import combined, load_data_as_trained
    from mvkit.evaluate import evaluate, few_photos_note, match_classes, plot_confusion
    from mvkit.models import load_model
    from mvkit.models.zoo import labels_of
    from mvkit.runtime import is_artifact, load_predictor

    if split not in ("val", "train", "all"):
        raise MvkitError(f"--split must be val, train or all, not {split!r}")
    check_writable(out)
    if data is None:
        if not is_artifact(model):
            raise MvkitError(f"give DATA: {model} is a model name, which records no data")
        data = _trained_data_of(Path(model))
        error_console.print(f"photos: {escape(data)}, the data it was trained on", markup=True)
    # an exported file runs in its own runtime, as Ultralytics' val does; a checkpoint or a name in PyTorch
    exported = is_artifact(model) and not str(model).endswith(FORMATS["safetensors"].suffix)
    net = load_predictor(model) if exported else load_model(model, pretrained=pretrained, weights=weights,
                                                            require_weights=True)
    # a model trained on DATA is scored on the photos its training held out, as verify does: another split's val
    # holds photos it trained on (a run with --val-fraction 0.1, photos added since)
    as_trained = _trained_on(model, data) if (val, val_fraction, seed, split_file) == (None,) * 4 else None
    # a class the model does not know is refused before the photos are decoded
    known = functools.partial(match_classes, model_labels=net.labels if exported else labels_of(net))
    with progress_bars() as start:
        scanning = start("checking photos", None, wait=True)  # the classes are checked first
        splits = load_data_as_trained(data, as_trained, on_scan_progress=scanning, check_classes=known) \
            if as_trained else load_data(
                data, val=val, val_fraction=0.2 if val_fraction is None else val_fraction, seed=seed or 0,
                split_file=split_file or out / "split.json", on_scan_progress=scanning, write_split=False,
                check_classes=known)
        dataset = {"val": splits.val, "train": splits.train}.get(split) or combined(splits.train, splits.val)
        result = evaluate(net, dataset, batch_size=batch_size, on_progress=start("evaluating", len(dataset)))
    out.mkdir(parents=True, exist_ok=True)
    splits.save_split()  # a failed evaluation leaves no split file behind
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
    png = plot_confusion(result, out / "confusion.png", title=f"{_short(model)} on {_short(data)} ({split})")
    _report_skipped(splits.skipped)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(title=f"{model} on {data} ({split}, {result.count} images)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, accuracy in result.per_class.items():
        table.add_row(name, f"{accuracy:.1%}")
    console.print(table)
    console.print(f"top-1 [bold]{result.top1:.2%}[/bold]   top-5 {result.top5:.2%}", markup=True)
    if as_trained and split != "all":
        photos = "held out when it was trained" if split == "val" else "it was trained on"
        console.print(f"{split}: the photos {photos} (the split {Path(model).name} records); --val-fraction, --seed "
                      "or --split-file choose another")
    if note := few_photos_note(result.count):
        console.print(f"note: {note}; evaluate on more photos")
    console.print(f"wrote {out / 'metrics.json'} and {png}")


@app.command("scan")
def scan_command(
    data: Path = typer.Argument(..., help="A folder of photos (any depth), or a CSV manifest (path,label[,split]) "
                                "as train reads it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find corrupt, truncated, non-image and oversized files before they break a run."""
    from mvkit.data.manifest import read_manifest
    from mvkit.data.images import SizeSummary, find_copies, is_image_file, list_files, scan_images

    unlisted: list = []
    if data.is_file() and data.suffix.lower() == ".csv":  # the photos it lists: a missing one is a bad file
        files = list(dict.fromkeys(path for path, _, _ in read_manifest(data)))
    elif data.is_dir():
        files = list_files(data, unlisted)
    else:
        raise MvkitError(f"{data} is not a folder or a CSV manifest")
    if not files and not unlisted:
        raise MvkitError(f"{data} holds no files to check")
    with progress_bars() as start:
        report = scan_images(files, on_progress=start("checking photos", len(files)), fingerprints=True)
    # a README or a video beside the photos is no damaged photo: named, but not a failed scan
    others = [(p, r) for p, r in report.bad if not is_image_file(p)]
    report.bad = unlisted + [(p, r) for p, r in report.bad if is_image_file(p)]
    if not report.good and not report.bad:
        raise MvkitError(f"{data} holds no photos, only other files ({', '.join(p.name for p, _ in others[:3])})")
    sizes = SizeSummary.of(report.sizes)
    duplicates, near = find_copies(report.good, report.fingerprints)
    if as_json:
        print_json({"ok": len(report.good), "bad": [{"path": str(p), "reason": r} for p, r in report.bad],
                    "not_photos": [str(p) for p, _ in others], "sizes": asdict(sizes) if sizes else None,
                    "duplicates": [[str(p) for p in group] for group in duplicates],
                    "near_duplicates": [[str(p) for p in group] for group in near]})
    else:
        console.print(f"{len(report.good)} photos ok, {len(report.bad)} bad")
        if others:
            console.print(f"{len(others)} file(s) not photos, which train and predict pass over: "
                          + ", ".join(str(p) for p, _ in others[:5]) + (", ..." if len(others) > 5 else ""))
        if sizes:
            console.print(f"sizes: {sizes.describe()}")
        if duplicates:
            console.print(f"{len(duplicates)} group(s) of identical copies (a copy in val is no test; copies under "
                          "two classes mean a wrong label):")
            for group in duplicates:
                console.print("  " + " = ".join(map(str, group)))
        if near:
            console.print(f"{len(near)} group(s) of near-identical photos (resized, re-saved or recoloured copies; "
                          "look at them, and keep one of each out of val):")
            for group in near:
                console.print("  " + " ~ ".join(map(str, group)))
        _report_skipped(report.bad)
    if report.bad:
        raise typer.Exit(1)


@app.command("train")
def train_command(
    context: typer.Context,
    model: Optional[str] = typer.Argument(None, callback=_model_files_exist, help="Zoo/timm model name, or an mvkit checkpoint to continue from. Not needed with --resume."),
    data: Optional[str] = typer.Argument(None, help="Dataset: class folders, CSV manifest or builtin:fashion. Not needed with --resume."),
    preset: Optional[str] = typer.Option(None, help="finetune (default: chosen by measurement), guide (the guide's exact recipe), head-only (backbone frozen) or scratch."),
    recipe_file: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe; options given here override it."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder: checkpoints, metrics, curves, resume state."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last saved state."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --out that holds a run, replacing it (without it such a folder is refused)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (finetune: 15)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per process (finetune: 32)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (finetune: 5e-4 for the whole net; guide: 3e-5 for the body)."),
    stem_lr: Optional[float] = typer.Option(None, help="Learning rate of the stem (guide: 1e-5; finetune: --lr)."),
    head_lr: Optional[float] = typer.Option(None, help="Learning rate of the classifier (guide: 5e-5; finetune: --lr)."),
    layer_decay: Optional[float] = typer.Option(None, help="timm layer-wise lr decay (e.g. 0.75) instead of stem/head lrs."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (finetune: 0.05, guide: 0.01)."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warm-up before the cosine schedule."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing (default 0.1)."),
    mixup_alpha: Optional[float] = typer.Option(None, "--mixup", help="MixUp alpha (0.2); 0 turns it off."),
    cutmix_alpha: Optional[float] = typer.Option(None, "--cutmix", help="CutMix alpha (1.0); 0 turns it off."),
    mix_prob: Optional[float] = typer.Option(None, help="Probability of mixing a batch (finetune: 1.0 at 15 epochs or more, epochs / 15 below; guide: 0.5)."),
    balanced: Optional[bool] = typer.Option(None, "--balanced/--no-balanced", help="Class-balanced sampling (weights 1/class count)."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of the weights and validate/save it."),
    ema_decay: Optional[float] = typer.Option(None, help="EMA decay per optimizer step (0.999)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping: epochs without a lower val loss (guide: 10; finetune: none)."),
    teacher: Optional[str] = typer.Option(None, help="Distil from this teacher: a checkpoint trained on the same data (or a model name with --teacher-weights)."),
    teacher_weights: Optional[Path] = typer.Option(None, help="Weights for the teacher."),
    distill_alpha: Optional[float] = typer.Option(None, help="Weight of the label loss in distillation (0.5)."),
    distill_temperature: Optional[float] = typer.Option(None, help="Distillation temperature T (scratch: 1.0; guide, finetune: 4.0)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from pretrained weights (finetune/head-only: yes)."),
    weights: Optional[Path] = WeightsOpt,
    img_size: Optional[int] = typer.Option(None, help="Input size (finetune, scratch: the photos' native size up to the model's; others: the model's)."),
    progressive_from: Optional[int] = typer.Option(None, help="Progressive resizing: train the first epoch at this size, rising in steps of 32 px to the input size by two thirds of the epochs."),
    val: Optional[Path] = typer.Option(None, "--val", help="A separate val folder of class folders."),
    val_fraction: Optional[float] = typer.Option(None, help="Share of each class held out for val (0.2)."),
    mixed_precision: Optional[str] = typer.Option(None, help="no, bf16 or fp16 (bf16 uses AMX on recent Intel CPUs)."),
    seed: Optional[int] = typer.Option(None, help="Seed of sampling, augmentation and init."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic algorithms only."),
    workers: Optional[int] = typer.Option(None, help="Data-loading worker processes (0: exact resume)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC weights and batches (default: on; faster convolutions)."),
    min_lr: Optional[float] = typer.Option(None, help="Learning rate at the end of the cosine schedule."),
    drop_rate: Optional[float] = typer.Option(None, help="Dropout before the classifier."),
    drop_path_rate: Optional[float] = typer.Option(None, help="Stochastic depth rate."),
    scale_min: Optional[float] = typer.Option(None, help="Smallest random-resized-crop area (0.5)."),
    auto_augment: Optional[str] = typer.Option(None, help="timm augmentation policy, e.g. rand-m7-mstd0.5-inc1 (RandAugment)."),
    save_every_steps: Optional[int] = typer.Option(None, help="Also save the resume state every N optimizer steps."),
) -> None:
    """Fine-tune, train from scratch or distil, on CPU, one GPU or many (launch with `accelerate launch`)."""
    from dataclasses import replace

    if resume and not (out / "recipe.yaml").exists():  # the two checks that need no import of the train stage
        raise MvkitError(f"no run to resume in {out} (recipe.yaml missing)")
    if not resume and recipe_file is None and (model is None or data is None):
        raise MvkitError("give MODEL and DATA, a --recipe file that names them, or --resume with the --out of an earlier run")
    from mvkit.train import TrainUI, build_recipe, load_recipe, train

    if resume:
        _refuse_changes_on_resume(context, out)
        recipe = replace(load_recipe(out / "recipe.yaml"), out=str(out))  # the folder may have moved
    else:
        options = dict(
            model=model, data=data, preset=preset, out=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
            stem_lr=stem_lr, head_lr=head_lr, layer_decay=layer_decay, weight_decay=weight_decay,
            warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, balanced=balanced, ema=ema, ema_decay=ema_decay,
            patience=patience,
            teacher=teacher, teacher_weights=str(teacher_weights) if teacher_weights else None,
            distill_alpha=distill_alpha, distill_temperature=distill_temperature, pretrained=pretrained,
            weights=str(weights) if weights else None, img_size=img_size, progressive_from=progressive_from,
            val=str(val) if val else None,
            val_fraction=val_fraction, mixed_precision=mixed_precision, seed=seed, deterministic=deterministic,
            workers=workers, channels_last=channels_last, min_lr=min_lr, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, scale_min=scale_min, auto_augment=auto_augment,
            save_every_steps=save_every_steps)
        recipe = build_recipe(recipe_file=recipe_file, **options)

    # deferred: a run refused by its checks prints its error line alone, without the blank line of a stopped bar
    with deferred_progress(TextColumn("{task.description}"), BarColumn(), CountColumn(), TimeElapsedColumn(),
                           TextColumn("{task.fields[stats]}")) as progress:
        def start_epoch(epoch: int, epochs_total: int, batches: int):
            if not progress.live.is_started:
                progress.start()
            task = progress.add_task(f"epoch {epoch + 1}/{epochs_total}", total=batches, stats="")

            def update(done: int, stats: dict) -> None:
                progress.update(task, completed=done, stats=f"loss {stats['loss']:.3f}  acc {stats['acc']:.1%}  "
                                                             f"{stats['img_s']:.1f} img/s")
            return update

        result = train(recipe, resume=resume, overwrite=overwrite, ui=TrainUI(log=progress.console.print, start_epoch=start_epoch))
    speed = f"{result.train_images_per_second:.1f} training img/s" if result.train_images_per_second else \
        "the run had trained all its epochs before: nothing was left to train"  # a finished run resumed
    console.print(f"best epoch {result.best_epoch}: val top-1 [bold]{result.val_top1:.2%}[/bold]; {speed}", markup=True)
    console.print(f"run folder {result.out}: best.safetensors, last.safetensors, metrics.csv, curves.png, confusion.png")


def _trained_data_of(artifact: Path, required: bool = True) -> Optional[str]:
    """The data an artifact's checkpoint was trained on, as training recorded it (as Ultralytics' val takes the
    data a model trained on), or a refusal that asks for --data (None where it is not `required`)."""
    from mvkit.artifact import Artifact
    from mvkit.data.datasets import BUILTIN_PREFIX, recorded_data

    recorded = recorded_data(Artifact.load(artifact))
    if not recorded:
        problem = f"give --data: {artifact} does not record the data its checkpoint was trained on"
    elif not recorded.startswith(BUILTIN_PREFIX) and not Path(recorded).exists():
        problem = f"give --data: {artifact}'s checkpoint was trained on {recorded}, which is not there any more"
    else:
        return str(recorded)
    if required:
        raise MvkitError(problem)
    return None


def _refuse_changes_on_resume(context: typer.Context, out: Path) -> None:
    """--resume continues the run exactly as its recipe.yaml says: anything else given on the command line (a
    longer --epochs, say) was ignored without a word."""
    given = [param.opts[0] if param.opts[0].startswith("-") else param.name.upper()
             for param in context.command.params if param.name not in ("resume", "out")
             and getattr(context.get_parameter_source(param.name), "name", None) == "COMMANDLINE"]
    if given:
        raise MvkitError(f"--resume continues the run in {out} as its recipe.yaml says and takes nothing else (got "
                         f"{', '.join(given)}); to train on from it with other settings, start a new run from its "
                         f"checkpoint: mvkit train {out / 'last.safetensors'} DATA ... --out NEW")


def _parse_sizes(sizes: Optional[str]) -> Optional[list[int]]:
    if sizes is None:
        return None
    try:
        values = [int(side) for side in sizes.split(",") if side.strip()]
    except ValueError:
        raise MvkitError(f"--sizes takes input sides separated by commas, e.g. 192,224,256; got {sizes!r}") from None
    if not values or min(values) < 32:
        raise MvkitError(f"--sizes: every side must be at least 32 px, got {sizes!r}")
    return values


def _warn_random_weights(model: str, pretrained: bool, weights: Optional[Path]) -> None:
    if not Path(model).exists() and not pretrained and weights is None:
        error_console.print(f"[bold yellow]warning:[/bold yellow] {escape(model)} has random weights (no --pretrained, "
                            "no --weights): fine for speed tests, its answers mean nothing", soft_wrap=True, markup=True)


@app.command("export")
def export_command(
    model: str = ModelArg,
    formats: List[str] = typer.Option(["onnx"], "--format", "-f",
                                      help=f"{', '.join(exportable())}, or all (every format installed); repeat for several, or separate them with commas."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: beside the checkpoint)."),
    pretrained: bool = PretrainedOpt,
    weights: Optional[Path] = WeightsOpt,
    sizes: Optional[str] = typer.Option(None, help="Core ML: input sides in one program, e.g. 192,224,256 (default: the guide's sizes this model can share, none above the size it was trained at)."),
    precision: Optional[str] = typer.Option(None, help="OpenVINO: default (the CPU's own: bf16 where it has it), fp32, or fp16 weights. "
                                            "Core ML compute precision: fp16 (default), fp32, or mixed (fp16 but "
                                            "the first two convolutions in fp32: less fp16 error, but those layers leave the Neural Engine)."),
    target: Optional[str] = typer.Option(None, help="Core ML minimum deployment target: iOS15..iOS18 (default iOS16)."),
    compress: Optional[str] = typer.Option(None, help="Core ML weight compression: none (default), int8, palettize4, palettize6, palettize8, prune50."),
) -> None:
    """Export a checkpoint to on-device formats; each file gets a sidecar with its labels and preprocessing.
    With several formats, one that fails is reported and the others are still written (exit 1)."""
    from mvkit.bench import file_size_mb
    from mvkit.export import available_formats, default_out_dir, export, plan_export
    from mvkit.formats import get_format
    from mvkit.models import load_model

    given = {name: value for name, value in {"sizes": _parse_sizes(sizes), "precision": precision, "target": target,
                                             "compression": compress}.items() if value is not None}
    formats = format_names(formats)
    names = available_formats() if "all" in formats else formats
    options = {}
    for fmt in names:  # every check before any conversion
        takes = {option.name for option in get_format(fmt).options}
        options[fmt] = {name: value for name, value in given.items() if name in takes}
        plan_export(fmt, options[fmt])
    unused = [name for name in given if not any(name in chosen for chosen in options.values())]
    if unused:
        plan_export(names[0], {name: given[name] for name in unused})  # refuses them by name
    out_dir = out or default_out_dir(model)
    check_writable(out_dir)
    net = load_model(model, pretrained=pretrained, weights=weights)
    _warn_random_weights(model, pretrained, weights)
    failed = []
    for fmt in names:
        try:
            with console.status(f"exporting {fmt}..."):
                artifact = export(model, fmt, out_dir, pretrained=pretrained, weights=weights, model=net, **options[fmt])
        except MvkitError as exc:
            if len(names) == 1:
                raise
            print_error(str(exc))
            failed.append(fmt)
            continue
        console.print(f"{fmt}: {artifact.path} ({file_size_mb(artifact.path):.1f} MB)")
        if artifact.extra.get("note"):
            console.print(f"  note: {artifact.extra['note']}")
        if artifact.extra.get("ops_outside_delegate"):
            console.print(f"  ops left outside the XNNPACK delegate: {', '.join(artifact.extra['ops_outside_delegate'])}")
    if failed:
        console.print(f"[red]failed:[/red] {', '.join(failed)}; the other formats were written", markup=True)
        raise typer.Exit(1)


@app.command("quantize")
def quantize_command(
    model: Path = typer.Argument(..., callback=_paths_exist, help="An mvkit checkpoint (.safetensors), or a float ONNX artifact for -f onnx."),
    method: str = typer.Option("ptq", help="ptq: static int8 calibrated on photos; qat: quantization-aware fine-tune then int8 (ExecuTorch); dynamic: PyTorch, Linear layers only (TorchScript)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration (and QAT training) photos: class folders, CSV or builtin:fashion."),
    count: int = typer.Option(256, min=1, help="Calibration photos, spread over the classes."),
    formats: List[str] = typer.Option(["all"], "--format", "-f", help="; ".join(f"{method}: " + ", ".join(f"{fmt} ({FORMATS[fmt].int8[method].description})" for fmt in int8_formats(method)) for method in ("ptq", "qat", "dynamic")) + "; or all (those installed)."),
    epochs: Optional[int] = typer.Option(None, help="qat: fine-tuning epochs (1)."),
    lr: Optional[float] = typer.Option(None, help="qat: learning rate (1e-5)."),
    calibration: Optional[str] = typer.Option(None, help="ptq onnx: activation ranges from the 99.999th percentile "
                                              "of a histogram (percentile, default) or from the observed extremes (minmax)."),
) -> None:
    """Compress a model: static int8 calibrated on real photos, QAT, or dynamic int8 of Linear layers."""
    from mvkit.bench import file_size_mb
    from mvkit.compress import plan_quantize, quantize

    given = {name: value for name, value in {"epochs": epochs, "lr": lr, "calibration": calibration}.items()
             if value is not None}
    plans = plan_quantize(model, method, format_names(formats), calib, given)
    for plan in plans:
        with progress_bars() as start:
            bar = start(f"{plan.method} {plan.fmt}", count if plan.entry.calibrated and plan.method == "ptq" else None)
            artifact = quantize(plan, model, calib, count, on_progress=bar)
        calibrated = (f", calibrated on {artifact.extra['calibration_images']} photos"
                      if "calibration_images" in artifact.extra else "")
        console.print(f"{artifact.extra['quantization']}: {artifact.path} "
                      f"({file_size_mb(artifact.path):.1f} MB{calibrated})")
        if artifact.extra.get("note"):
            console.print(f"  note: {artifact.extra['note']}")
        if calib:
            console.print(f"check it: mvkit verify {artifact.path} --data {calib}")


@app.command("inspect")
def inspect_command(
    artifact: Path = typer.Argument(..., callback=_paths_exist, help=f"An exported artifact, with or without its sidecar: {ARTIFACT_KINDS}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What an artifact says about itself: format, inputs and outputs, labels, Preprocess, compression, and whether
    each came from the file or its sidecar."""
    from mvkit.metadata import inspect_artifact

    facts = inspect_artifact(artifact)
    if as_json:
        print_json(facts)
        return
    values = facts["values"]
    architecture = values["architecture"]["value"] or "architecture unknown"
    console.print(f"[bold]{escape(str(artifact))}[/bold]: {facts['format']}, {escape(architecture)}", markup=True)
    for kind in ("inputs", "outputs"):
        for port in facts[kind]:
            sizes = port.get("sizes") or []  # a Core ML input's enumerated sizes: the shape shows only its default
            also = f", sides {', '.join(map(str, sizes))}" if len(sizes) > 1 else ""
            shape = port["shape"] if port["shape"] is not None else "(the file records no shape)"  # TorchScript
            console.print(f"  {kind[:-1]:6s} {port['name']}: {port['dtype']} {shape}{also}")
    for key, shown in values.items():
        if key in ("format", "architecture") or shown["value"] is None:
            continue
        value = shown["value"]
        if key == "labels":
            value = f"{len(value)}: " + "; ".join(value[:8]) + ("; ..." if len(value) > 8 else "")  # labels hold commas
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        console.print(f"  {key:13s} {escape(str(value))}  [dim](from {' and '.join(shown['from'])})[/dim]", markup=True)
    if not facts["described_by_file"] and facts["has_sidecar"]:
        again = "save it again (checkpoints of this mvkit carry it)" if facts["format"] == "safetensors" else \
            "export it again"
        console.print("  [yellow]the file carries no mvkit metadata: only its sidecar describes it; "
                      f"{again} to embed it[/yellow]", markup=True)
    elif not facts["described_by_file"]:
        console.print("  [yellow]neither the file nor a sidecar says which model, labels and preprocessing it holds, "
                      "so mvkit cannot run it; make it with `mvkit export`[/yellow]", markup=True)
    for key in facts["mismatches"]:
        console.print(f"  [red]the file and its sidecar disagree on {key}[/red]", markup=True)


@app.command("verify")
def verify_command(
    artifact: Path = typer.Argument(..., callback=_paths_exist, help=f"An exported artifact with its sidecar: {ARTIFACT_KINDS}."),
    data: Optional[str] = typer.Option(None, "--data", help="Real photos to compare on: class folders, CSV or builtin:fashion (val part). Default: the data its checkpoint was trained on, where the file records it."),
    threshold: float = typer.Option(0.99, help="Least top-1 agreement with the source checkpoint to pass."),
    limit: Optional[int] = typer.Option(None, help="Use only this many photos, spread over the classes."),
    reference: Optional[str] = typer.Option(None, help="Compare against this model instead of the recorded source."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run an artifact in its own runtime next to its source checkpoint on real photos; exit 1 below threshold."""
    from mvkit.verify import verify

    if data is None:
        data = _trained_data_of(artifact)
        error_console.print(f"photos: the val part of {escape(data)}, the data its checkpoint was trained on",
                            markup=True)
    with progress_bars() as start:
        report = verify(artifact, data, threshold=threshold, limit=limit, reference=reference,
                        progress=start)
    if as_json:
        print_json(report.to_dict())
    else:
        verdict = "[green]PASS[/green]" if report.passed else "[red]FAIL[/red]"
        runtime = f" (run by {report.runtime})" if report.runtime else ""
        console.print(f"{verdict} {report.format} {escape(f'{report.artifact}{runtime} vs {report.reference}')} on {report.count} photos",
                      markup=True)
        if report.structure:
            structure = report.structure
            console.print(f"  structure: input {structure.get('input_kind')} {structure.get('color_space')} sizes "
                          f"{structure.get('sizes')}, {structure.get('num_labels')} labels, outputs {structure.get('outputs')}, "
                          f"weights {structure.get('weight_dtypes')}, compression ops {structure.get('compression_ops') or 'none'}")
            for problem in report.problems or []:
                console.print(f"  [red]problem:[/red] {escape(problem)}", markup=True)
        console.print(f"  top-1 agreement {report.agreement:.2%} (threshold {report.threshold:.0%}), "
                      f"max |dp| {report.max_abs_prob_diff:.2e}, mean |dp| {report.mean_abs_prob_diff:.2e}")
        enough = math.ceil(1 / (1 - report.threshold) - 1e-9) if report.threshold < 1 else 0
        if report.count < enough:  # one flip in `enough` photos is what the threshold allows
            console.print(f"  note: only {report.count} photos; a {1 - report.threshold:.0%} change shows on "
                          f"{enough} or more: verify on more photos")
        if report.flips:
            near_ties = " (near ties, which any reduced precision can flip)" if report.largest_flipped_lead < 0.05 else ""
            console.print(f"  {report.flips} photo(s) changed top-1; on them the reference led its second class by at "
                          f"most {report.largest_flipped_lead:.1%}{near_ties}")
        if report.artifact_top1 is not None:
            console.print(f"  accuracy: artifact {report.artifact_top1:.2%}, reference {report.reference_top1:.2%}")
        if report.interpreter_vs_coreml:
            check = report.interpreter_vs_coreml
            console.print(f"  mvkit's interpreter vs Core ML: top-1 agreement {check['agreement']:.2%}, "
                          f"max |dp| {check['max_abs_prob_diff']:.2e}, mean |dp| {check['mean_abs_prob_diff']:.2e}")
    if not report.passed:
        raise typer.Exit(1)


@app.command("bench")
def bench_command(
    artifacts: Optional[List[Path]] = typer.Argument(None, callback=_paths_exist, help="Artifacts to compare (checkpoints and exported files)."),
    all_formats: Optional[Path] = typer.Option(None, "--all-formats", callback=_paths_exist, help="Export this checkpoint to every installed format (and, with photos, to static int8 calibrated on them), then bench all and name the fastest that passes verification; a format that fails gets a failed row."),
    data: Optional[str] = typer.Option(None, "--data", help="Real photos for accuracy and agreement with the source (val part). Default with --all-formats: the data the checkpoint was trained on, where it records it."),
    limit: int = typer.Option(200, min=1, help="Photos used for accuracy/agreement."),
    rounds: int = typer.Option(30, min=1, help="Interleaved latency rounds (batch 1)."),
    batch: int = typer.Option(8, min=1, help="Batch size for throughput."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak RSS in a fresh process per artifact."),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for bench.json and bench.md."),
) -> None:
    """Latency p50/p90, throughput, peak memory, size, accuracy and agreement of artifacts, side by side."""
    from mvkit.bench import add_accuracy, bench, failed_row, fastest_verified, markdown_table, write_results
    from mvkit.compress import plan_quantize, quantize
    from mvkit.data.datasets import check_data_spec
    from mvkit.data.images import load_image
    from mvkit.demo import sample_photos
    from mvkit.export import available_formats, export
    from mvkit.models import load_model

    paths = list(artifacts or [])
    if all_formats is None and not paths:
        raise MvkitError("give artifacts to bench, or --all-formats CHECKPOINT")
    if all_formats is not None and data is None:  # naming the fastest verified artifact needs photos
        data = _trained_data_of(all_formats, required=False)
        if data:
            error_console.print(f"photos: {escape(data)}, the data the checkpoint was trained on (--data to choose)",
                                markup=True)
    if data:
        check_data_spec(data, "--data")
    check_writable(out)
    export_failures = []
    if all_formats is not None:
        paths.append(all_formats)
        net = load_model(all_formats)
        formats = available_formats()
        for fmt in formats:
            try:
                with console.status(f"exporting {fmt}..."):
                    paths.append(export(all_formats, fmt, model=net).path)
            except MvkitError as exc:
                export_failures.append(failed_row(all_formats, fmt, exc))
        with_int8 = [fmt for fmt in formats if fmt in int8_formats("ptq")]
        for plan in plan_quantize(all_formats, "ptq", with_int8, data) if data and with_int8 else []:
            try:
                with console.status(f"static int8 for {plan.fmt}..."):
                    paths.append(quantize(plan, all_formats, data).path)
            except MvkitError as exc:
                export_failures.append(failed_row(all_formats, plan.fmt, exc))
    photos = [load_image(p) for p in sample_photos()]
    with progress_bars() as start:
        rows = bench(paths, photos, rounds=rounds, batch=batch, measure_memory=memory,
                     on_progress=start("latency rounds", rounds))
        if data:
            add_accuracy(rows, data, limit)
    rows += export_failures
    write_results(rows, out)
    console.print(markdown_table(rows), markup=False, soft_wrap=True)
    threads = sorted({row.threads for row in rows if row.threads})
    console.print(f"threads: {', '.join(map(str, threads)) or '-'}; wrote {out / 'bench.json'} and {out / 'bench.md'}")
    if data:
        best = fastest_verified(rows)
        console.print(f"fastest verified on this machine: {best.artifact} ({best.format}, p50 "
                      f"{best.latency_p50_ms:.1f} ms, top-1 {best.top1:.1%})" if best else
                      "no artifact passed verification: see the status column", soft_wrap=True)
    else:
        console.print("no accuracy or agreement without photos: give --data to verify each file and name the "
                      "fastest that passes")


@app.command("compare")
def compare_command(
    models: List[str] = typer.Argument(..., callback=_model_files_exist, help="Zoo or timm model names, e.g. mobilevit_xxs tf_efficientnet_lite0 edgevit_xxs."),
    data: str = typer.Option(..., "--data", help="Photos to train and measure on: class folders, a CSV manifest (path,label[,split]) or builtin:fashion."),
    out: Path = typer.Option(Path("runs/compare"), help="Folder for the table, the chart and each model's runs."),
    epochs: int = typer.Option(3, help="Training budget per model (the same for all)."),
    img_size: int = typer.Option(128, help="Input size for every model."),
    batch_size: int = typer.Option(32, help="Training batch size."),
    teacher: Optional[Path] = typer.Option(None, help="A checkpoint fine-tuned on DATA to distil every model from."),
    formats: List[str] = typer.Option(["onnx", "executorch"], "--format", "-f", help="Runtimes to time (fp32 and int8); repeat for several, or all (those installed; with --int8, those with static int8)."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also quantize to static int8, calibrated on DATA."),
    rounds: int = typer.Option(20, help="Latency rounds per artifact (interleaved)."),
    redo: bool = typer.Option(False, "--redo", help="Measure again the models measured before with this budget and training recipe."),
    retime: bool = typer.Option(False, "--retime", help="Keep the trained and exported files of an earlier run with "
                                "this budget; time and score them again (e.g. on a quiet machine)."),
) -> None:
    """Compare models on the same machine and data: params, MACs, accuracy after the same training budget, batch-1
    latency per runtime (fp32 and int8), memory, size; a table (md, json, csv) and a Pareto chart (png, svg)."""
    from mvkit.bench.compare import CompareBudget, compare, formats_to_time, markdown

    budget = CompareBudget(epochs=epochs, img_size=img_size, batch_size=batch_size,
                           teacher=str(teacher) if teacher else None, formats=formats_to_time(formats, int8),
                           int8=int8, bench_rounds=rounds)
    with console.status("comparing...") as status:
        def log(text: str) -> None:  # a step: the status line in a terminal, a line of its own in a pipe or log
            if console.is_terminal:
                status.update(escape(text))
            else:
                error_console.print(text)

        def training_status(text: str) -> None:  # batch by batch: a terminal's status line only
            if console.is_terminal:
                status.update(escape(text))

        rows = compare(models, data, out, budget, redo=redo, retime=retime, log=log, status=training_status)
    console.print(markdown(rows, data, budget), markup=False)
    console.print(f"table: {out / 'compare.md'} (.json, .csv); chart: {out / 'pareto.png'} (.svg)")


@app.command("report")
def report_command(
    inputs: List[Path] = typer.Argument(..., help="Run folders or results files (training runs, bench.json, compare.json, live --metrics files)."),
    out: Path = typer.Option(Path("report.html"), help="The HTML page to write (self-contained)."),
) -> None:
    """One self-contained HTML page of every table and chart in the results given; each table names its file."""
    from mvkit.report import write_report

    check_file_out(out, "--out", "report.html")
    console.print(f"report: {write_report(inputs, out)}")


@app.command("live")
def live_command(
    models: List[str] = typer.Argument(..., callback=_model_files_exist, help="An artifact or checkpoint (or a zoo name with --pretrained); "
                                       "several: one per input size, the device picks among them."),
    source: str = typer.Option(..., "--source", "-s", help="A camera index (0), a video file, a stream URL "
                               "(rtsp://, http:// MJPEG, HLS) or a folder of photos (played as frames)."),
    fps: float = typer.Option(15.0, help="Target inference rate; sooner frames are dropped (the guide's frame interval)."),
    out: Optional[Path] = typer.Option(None, help="Annotated video of the processed frames (.mp4, .mkv, .mov, .avi)."),
    metrics: Optional[Path] = typer.Option(None, help="Write the run's metrics here (JSON)."),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds."),
    frames: Optional[int] = typer.Option(None, help="Stop after this many results."),
    size: Optional[int] = typer.Option(None, help="Input side to run at (default: chosen by device capability)."),
    serve: Optional[str] = typer.Option(None, help="Show the annotated stream on a local web page, e.g. 127.0.0.1:8080."),
    idle_release: Optional[float] = typer.Option(None, help="Release the model after this many seconds without frames."),
    warmup: int = typer.Option(2, help="Warm-up inferences before the first frame (0: none)."),
    reuse_buffers: bool = typer.Option(True, "--reuse-buffers/--fresh-buffers", help="Prepare frames into one preallocated buffer."),
    realtime: bool = typer.Option(True, "--realtime/--as-fast", help="Play files and folders on their own clock "
                                  "(--as-fast: every due frame is processed, as fast as the model goes)."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Print each result as one JSON line instead of the status line."),
    pretrained: bool = PretrainedOpt,
    weights: Optional[Path] = WeightsOpt,
) -> None:
    """Classify a camera, video, stream or folder in real time with the guide's deployment policies; Ctrl-C stops."""
    import signal

    from rich.live import Live

    from mvkit import live

    engine = live.run(models, source, fps=fps, size=size, pretrained=pretrained, weights=weights, out=out,
                      metrics_path=metrics, max_frames=frames, duration_s=duration, serve=serve,
                      idle_release_s=idle_release, warmup=warmup, reuse_buffers=reuse_buffers, realtime=realtime)
    error_console.print(f"input size {engine.size.size}: {engine.size.reason}")
    if engine.server:
        warning = " [yellow](reachable from other machines)[/yellow]" if engine.server.public else ""
        error_console.print(f"serving {escape(engine.server.url)}{warning}", markup=True)

    def stop_on_sigterm(number, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    results = iter(engine)
    try:
        with Live(console=error_console, refresh_per_second=4, transient=True) as status:
            for result in results:
                if jsonl:
                    console.file.write(json.dumps(result.to_dict()) + "\n")
                    console.file.flush()
                else:
                    status.update(_live_status(engine, result))
    except KeyboardInterrupt:
        engine.stopped_by = "interrupted"
    finally:
        results.close()
        signal.signal(signal.SIGTERM, previous)
    # with --jsonl stdout holds the results alone, one JSON object a line: the summary goes to stderr
    _print_live_summary(engine.summary(), out, metrics, error_console if jsonl else console)


def _live_status(engine, result) -> str:
    summary = engine.metrics
    fps = summary.recent_fps()
    dropped = sum(summary.dropped.values())
    return (f"frame {result.index}  {escape(result.label)} {result.confidence:.0%}  "
            f"{'-' if fps is None else f'{fps:.1f}'} fps  inference {result.inference_ms:.1f} ms  "
            f"end-to-end {result.latency_ms:.1f} ms  dropped {dropped}")


def _print_live_summary(summary: dict, out: Optional[Path], metrics: Optional[Path], to: Console) -> None:
    frames, latency = summary["frames"], summary["latency_ms"]
    dropped = ", ".join(f"{count} {reason}" for reason, count in frames["dropped"].items() if count) or "none"
    achieved = summary["fps"]["achieved"]
    to.print(f"{summary['stopped_by']} after {summary['duration_s']:.1f} s: {frames['read']} frames read, "
             f"{frames['processed']} processed, dropped {dropped}, {frames['corrupt']} corrupt")
    to.print(f"rate {'-' if achieved is None else f'{achieved:.1f}'} fps (target {summary['fps']['target']:g}); "
             f"end-to-end p50 {latency['end_to_end_ms']['p50']} ms, p95 {latency['end_to_end_ms']['p95']} ms; "
             f"inference p50 {latency['inference_ms']['p50']} ms, p95 {latency['inference_ms']['p95']} ms")
    energy = summary["energy"]
    energy_text = (f"{energy['per_1000_inferences_j']} J per 1,000 inferences" if energy["available"]
                   else f"energy not available ({energy['reason']})")
    to.print(f"CPU {summary['cpu_percent']}%, peak memory {summary['peak_rss_mb']} MB, {energy_text}")
    for gap in summary["gaps"]:
        state = "reconnected" if gap["recovered"] else "not recovered"
        to.print(f"gap at {gap['at_s']} s: {gap['seconds']} s without frames ({gap['reason']}), {state}")
    for event in summary["events"]:
        to.print(f"{event['policy']}: {event['message']}")
    if out and frames["written"]:
        to.print(f"video: {out} ({frames['written']} frames)")
    if metrics:
        to.print(f"metrics: {metrics}")


@app.command("demo")
def demo_command(out: Path = typer.Option(Path("runs/demo"), help="Folder for everything the demo writes.")) -> None:
    """The main job on built-in data: predict, fine-tune, eval, export to every format, int8, verify, bench."""
    from mvkit.demo import DemoStep, run_demo

    check_writable(out)
    with progress_bars() as start:
        result = run_demo(out, DemoStep(start=start, log=lambda text: console.print(f"[bold cyan]{escape(text)}[/bold cyan]", markup=True)))
    for item in result.photo_predictions:
        best = item["top"][0]
        console.print(f"{Path(item['path']).name}: {best['label']} ({best['probability']:.1%})")
    for item in result.sample_predictions:
        best = item["top"][0]
        console.print(f"{Path(item['path']).name}: predicted {best['label']} ({best['probability']:.1%})")
    metrics = result.metrics
    console.print(f"builtin:fashion val: top-1 [bold]{metrics['top1']:.2%}[/bold], top-5 {metrics['top5']:.2%} "
                  f"on {metrics['count']} images", markup=True)
    console.print(f"checkpoint {result.checkpoint}, confusion matrix {result.confusion_png}")
    from mvkit.bench import INT8_BUDGET_PT, is_quantized, verified_status

    for report in result.verify_reports:
        quantized = is_quantized(report["artifact"])
        status = verified_status(report["passed"], quantized, report["artifact_top1"], report["reference_top1"])
        drop = 100 * (report["reference_top1"] - report["artifact_top1"])
        verdict = "PASS" if status == "verified" else \
            f"{status}: top-1 {drop:.1f} points below the checkpoint's (int8 budget {INT8_BUDGET_PT:g})" if quantized \
            else "below the 99% agreement threshold"
        console.print(f"verify {Path(report['artifact']).name}: agreement {report['agreement']:.1%}, "
                      f"max |dp| {report['max_abs_prob_diff']:.1e}, top-1 {report['artifact_top1']:.1%} - {verdict}")
    console.print(result.bench_table, markup=False, soft_wrap=True)
    console.print(f"report: {result.report}")


def _command_name(argv: list[str]) -> str:
    return next((arg for arg in argv if not arg.startswith("-")), "mvkit")


def print_error(message: str) -> None:
    error_console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True, markup=True)


def run(argv: list[str]) -> int:
    """Run one command line; returns its exit status. User errors print one `error:` line (status 2), never a
    traceback."""
    command = _command_name(argv)
    try:
        code = app(args=argv, prog_name="mvkit", standalone_mode=False)
    except MvkitError as exc:
        print_error(str(exc))
        return 2
    except typer.TyperException as exc:  # usage errors: unknown option, bad value
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print_error(f"{message} (see `mvkit {command} --help`)" if command != "mvkit" else message)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        error_console.print("[yellow]interrupted[/yellow]", markup=True)
        return 130
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: `run` with third-party output sent to a log file unless -v (mvkit.quiet)."""
    from mvkit.quiet import route_logging, third_party_to_log

    argv = (sys.argv[1:] if argv is None else argv) or ["--help"]
    verbose = any(arg in ("-v", "--verbose") for arg in argv)
    quiet = not verbose and "--help" not in argv  # typer prints help on sys.stdout
    try:
        with third_party_to_log([console, error_console], _command_name(argv), not quiet) as log_file:
            handler = logging.FileHandler(log_file) if log_file else None
            route_logging(error_console, verbose, handler)
            try:
                code = run(argv)
            finally:
                if handler:
                    handler.close()
    except BrokenPipeError:  # the reader went away (mvkit predict ... | head): stop quietly, as other tools do
        code = 1
    _stdout_to_devnull_if_closed()
    sys.exit(code)


def _stdout_to_devnull_if_closed() -> None:
    """After a closed pipe, Python's own flush at exit would print a BrokenPipeError."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
