"""`mvkit train`: one training loop, read top to bottom, on accelerate (CPU, GPUs, many machines).

Per step: MixUp/CutMix on the batch (timm), student input by its Preprocess, label loss or distillation,
backward, AdamW step, per-update cosine schedule, EMA. Per epoch: validation, metrics, best/last
checkpoints, the resume state, early stopping on val loss. Ctrl-C or SIGTERM stops at the next batch boundary
and saves the resume state there (train/control.py); a NaN/inf loss stops with the last good checkpoint intact.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mvkit.artifact import Artifact, sidecar_path
from mvkit.compat import reset_accelerate_precision
from mvkit.data.datasets import DataSplits, check_for_training, class_histogram, load_data, split_record
from mvkit.errors import MvkitError
from mvkit.evaluate import evaluate, plot_confusion
from mvkit.files import check_writable
from mvkit.models import (create_model, labels_of, load_model, preprocess_of, relabel_classifier, save_checkpoint,
                          set_preprocess)
from mvkit.models.zoo import fixed_input_size
from mvkit.train.batches import model_input, to_unit_range, train_transform
from mvkit.train.losses import distillation_loss, label_loss
from mvkit.train.optim import build_optimizer, build_scheduler
from mvkit.train.recipe import TrainRecipe, check_progressive, native_input_size, read_recipe_file, train_size_at
from mvkit.train.control import StopRequest, deterministic_algorithms, run_folder_lock
from mvkit.train.sampling import EpochBatchSampler
from mvkit.train.state import Progress, load_state, restore_rng, save_state, seed_everything

log = logging.getLogger(__name__)


class TrainingDiverged(MvkitError):
    pass


@dataclass
class TrainUI:
    """Hooks the CLI fills with rich output; the defaults keep the library quiet."""
    log: Callable[[str], None] = lambda text: log.info(text)
    # (epoch, epochs, batches) -> update(batches_done, stats)
    start_epoch: Callable[[int, int, int], Callable[[int, dict[str, float]], None]] = (
        lambda epoch, epochs, batches: (lambda done, stats: None))


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    train_images_per_second: float = 0.0
    val_top1: float = 0.0
    updates: int = 0  # optimizer steps taken
    model: nn.Module | None = None  # the final model (EMA weights if EMA is on), on every process
    recipe: TrainRecipe | None = None  # as resolved by the run (e.g. its input size), as in recipe.yaml


def _out_paths(out: Path) -> dict[str, Path]:
    return {name: out / file for name, file in {
        "recipe": "recipe.yaml", "split": "split.json", "state": "resume.pt", "best": "best.safetensors",
        "last": "last.safetensors", "csv": "metrics.csv", "json": "metrics.json", "curves": "curves.png",
        "confusion": "confusion.png"}.items()}


def _build_student(recipe: TrainRecipe, classes: list[str]) -> nn.Module:
    path = Path(recipe.model)
    # only when asked: not every architecture takes them
    regularisation = {k: v for k, v in (("drop_rate", recipe.drop_rate), ("drop_path_rate", recipe.drop_path_rate)) if v}
    if path.is_file() and sidecar_path(path).exists():  # continue from an mvkit checkpoint
        artifact = Artifact.load(path)
        model = create_model(artifact.model_name, labels=artifact.labels, weights=path,
                             preprocess=artifact.preprocess, **regularisation)
        if artifact.labels != classes:
            model = relabel_classifier(model, classes)
    else:
        model = create_model(recipe.model, labels=classes, pretrained=recipe.pretrained and not recipe.weights,
                             weights=recipe.weights, **regularisation)
    changes = {k: v for k, v in (("size", recipe.img_size), ("crop_pct", recipe.crop_pct)) if v is not None}
    if changes:
        set_preprocess(model, **changes)
    if recipe.freeze_backbone:
        head = {id(p) for p in model.get_classifier().parameters()}
        for param in model.parameters():
            param.requires_grad = id(param) in head
    return model


def _build_teacher(recipe: TrainRecipe, classes: list[str]) -> nn.Module | None:
    if not recipe.teacher:
        return None
    teacher = load_model(recipe.teacher, pretrained=not recipe.teacher_weights, weights=recipe.teacher_weights,
                         num_classes=len(classes))
    if labels_of(teacher) != classes and not all(l.startswith("class_") for l in labels_of(teacher)):
        raise MvkitError(f"the teacher's classes {labels_of(teacher)[:5]} differ from the data's {classes[:5]}: "
                         "distil from a teacher fine-tuned on this data (e.g. a checkpoint from mvkit train)")
    for param in teacher.parameters():
        param.requires_grad = False
    return teacher.eval()


@torch.inference_mode()
def _validate(model: nn.Module, dataset, batch_size: int, device: torch.device, rank: int, world: int,
              reduce: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """(val loss, val top-1) over the whole val set; each process takes every world-th photo."""
    model.eval()
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size)
    totals = torch.zeros(3, device=device)  # loss sum, correct, count
    for images, targets in loader:
        images, targets = images.to(device), torch.as_tensor(targets, device=device)
        logits = model(images).float()
        totals += torch.stack([nn.functional.cross_entropy(logits, targets, reduction="sum"),
                               (logits.argmax(-1) == targets).sum().float(), torch.tensor(float(len(targets)), device=device)])
    totals = reduce(totals)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


@torch.no_grad()
def _average_buffers(model: nn.Module, accelerator) -> None:
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.copy_(accelerator.reduce(buffer.clone(), reduction="mean"))


def _write_metrics(paths: dict[str, Path], history: list[dict[str, float]]) -> None:
    with paths["csv"].open("w", newline="") as handle:
        # every column any row has: a run resumed by a newer mvkit has rows with more of them
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in history for key in row)))
        writer.writeheader()
        writer.writerows(history)
    paths["json"].write_text(json.dumps(history, indent=1))


def plot_curves(history: list[dict[str, float]], path: Path, mixed: bool = False) -> Path:
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend is left alone
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, ylabel, train_label in ((loss_ax, "loss", "loss", "train"),
                                         (acc_ax, "top1", "top-1", "train (on mixed batches)" if mixed else "train")):
        # markers: a run of one epoch is one point, which a line alone would not show
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", markersize=3, label=train_label)
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", markersize=3, label="val")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


@dataclass
class _Run:
    """Everything one training run holds, built (and checked) before the first step."""
    recipe: TrainRecipe
    paths: dict[str, Path]
    accelerator: object
    data: DataSplits
    model: nn.Module  # as prepared by accelerate
    plain_model: nn.Module
    teacher: nn.Module | None
    student_pre: object
    teacher_pre: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    ema: object
    mixup: object
    batches_per_epoch: int
    progress: Progress = field(default_factory=Progress)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.plain_model

    def train_size(self, epoch: int) -> int:
        return train_size_at(self.recipe, epoch, self.student_pre.size)

    def save_resume_state(self) -> None:
        if self.main:
            save_state(self.paths["state"], self.progress, self.plain_model, self.optimizer, self.scheduler,
                       self.ema)


def _set_up(recipe: TrainRecipe, resume: bool, paths: dict[str, Path], ui: TrainUI) -> _Run:
    """Data, models, optimizer and resume state, every check done; recipe.yaml and split.json are written only
    once all of them passed, so a run that fails its checks leaves nothing."""
    from accelerate import Accelerator
    from timm.data import Mixup
    from timm.utils import ModelEmaV3

    # Several processes without CUDA (torchrun / accelerate launch on CPUs): accelerate only picks the gloo
    # backend when told to run on the CPU.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    state = load_state(paths["state"]) if resume else None  # a damaged state fails before any other work
    reset_accelerate_precision()
    accelerator = Accelerator(mixed_precision=recipe.mixed_precision, cpu=multi_cpu)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    if recipe.mixed_precision == "fp16" and device.type == "cpu":  # accelerate runs it as fp32 there, silently
        raise MvkitError("--mixed-precision fp16 runs on GPUs only: on this CPU it would train in fp32; use bf16 "
                         "(fast on CPUs with AVX-512 BF16 or AMX) or no")
    seed_everything(recipe.seed)

    data: DataSplits = load_data(recipe.data, val=recipe.val, val_fraction=recipe.val_fraction,
                                 seed=recipe.split_seed, split_file=paths["split"], write_split=False,
                                 fingerprints=True)
    if len(data.val) == 0:
        raise MvkitError(f"{recipe.data} leaves no photo for val; give more photos per class or a --val folder")
    check_for_training(data)
    model = _build_student(recipe, data.classes)
    model_size = preprocess_of(model).size
    native = None if Path(recipe.model).is_file() else native_input_size(recipe, model_size, data.photo_sizes)
    if native is not None:  # recipe.yaml records the size, so a resumed run keeps it
        set_preprocess(model, size=native)
        recipe = replace(recipe, img_size=native)
        # the photos' size to the nearest 32 px, or mvkit's smallest (64) for smaller photos
        why = "the photos' native size" if native - data.photo_sizes.short_side_median < 32 else \
            "the smallest size mvkit trains at, near the photos' size"
        ui.log(f"input {native} px, {why} ({data.photo_sizes.describe()}), not the model's {model_size} px; "
               "--img-size chooses another")
    teacher = _build_teacher(recipe, data.classes)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last) if teacher is not None else None
    student_pre = preprocess_of(model)
    teacher_pre = preprocess_of(teacher) if teacher is not None else None
    check_progressive(recipe, student_pre.size)
    if recipe.progressive_from is not None and fixed_input_size(model) is not None:
        raise MvkitError(f"{recipe.model} takes one input size, {student_pre.size} px (its position embeddings are "
                         "built for it): progressive resizing needs a model that takes any; drop --progressive-from")
    data.set_transforms(None, student_pre.eval_transform())  # the train transform is set per epoch
    per_process = len(data.train) // world
    if per_process < recipe.batch_size:  # a small dataset: one batch of them all (even, for MixUp's pairs)
        if per_process < 2:
            raise MvkitError(f"{len(data.train)} training photo(s) for {world} process(es): each needs at least 2")
        fitted = per_process - per_process % 2
        ui.log(f"batch {fitted}: the {len(data.train)} training photos are fewer than a batch of {recipe.batch_size}"
               + (f" x {world} processes" if world > 1 else ""))
        recipe = replace(recipe, batch_size=fitted)  # recipe.yaml records it, so a resumed run keeps it
    batches_per_epoch = EpochBatchSampler(data.train.targets, recipe.batch_size, recipe.seed, 0,
                                          rank, world).batches_per_epoch()
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, batches_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    if teacher is not None:
        teacher = teacher.to(device)
    plain_model = accelerator.unwrap_model(model)
    ema = ModelEmaV3(plain_model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema else None
    mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha, prob=recipe.mix_prob,
                  switch_prob=recipe.mix_switch_prob, label_smoothing=recipe.label_smoothing,
                  num_classes=len(data.classes)) if recipe.uses_mixing else None
    run = _Run(recipe, paths, accelerator, data, model, plain_model, teacher, student_pre, teacher_pre, optimizer,
               scheduler, ema, mixup, batches_per_epoch)
    if state is not None:
        plain_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        run.progress = state["progress"]
        restore_rng(state["rng"])
        ui.log(f"resumed at epoch {run.progress.epoch + 1}, batch {run.progress.batch}")
    if run.main:  # every check passed: now the run folder gets its files
        data.save_split()
        recipe.save(paths["recipe"])
        if data.skipped:
            ui.log(f"skipped {len(data.skipped)} unreadable photos: " + ", ".join(str(p) for p, _ in data.skipped[:5]))
        histogram = class_histogram(data.train)
        ui.log(f"{len(data.train)} train / {len(data.val)} val photos, {len(data.classes)} classes: "
               + ", ".join(f"{name} {count}" for name, count in histogram.items()))
        if recipe.progressive_from is not None:
            sizes = [run.train_size(epoch) for epoch in range(recipe.epochs)]
            ui.log("progressive resizing, training input per epoch: "
                   + ", ".join(f"{size} px x {sizes.count(size)}" for size in dict.fromkeys(sizes)))
        if teacher is not None:
            ui.log(f"teacher {recipe.teacher}: input {teacher_pre.size} px, mean {teacher_pre.mean}; "
                   f"student {student_pre.size} px, mean {student_pre.mean}")
    return run


def _train_one_epoch(run: _Run, stop: StopRequest, ui: TrainUI) -> tuple[float, float, int, float]:
    """Train from the saved position to the end of the epoch, or to the batch boundary where a stop was asked;
    returns (loss sum, correct, photos seen, seconds)."""
    recipe, progress, accelerator = run.recipe, run.progress, run.accelerator
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    epoch = progress.epoch
    if progress.batch == 0:  # a fresh epoch: its randomness depends on (seed, epoch) only
        seed_everything(recipe.seed * 1000 + epoch * 10 + rank)
    size = run.train_size(epoch)
    canvas = max(size, run.teacher_pre.size if run.teacher_pre else 0)  # the teacher gets its own size from it
    run.data.train.transform = train_transform(canvas, run.student_pre.interpolation, recipe.scale_min,
                                               recipe.auto_augment)
    sampler = EpochBatchSampler(run.data.train.targets, recipe.batch_size, recipe.seed, epoch, rank, world,
                                balanced=recipe.balanced, start_batch=progress.batch)
    # Its own generator: creating the loader must not draw from the global RNG, or a resumed run would be one
    # draw off the uninterrupted one.
    loader = torch.utils.data.DataLoader(run.data.train, batch_sampler=sampler, num_workers=recipe.workers,
                                         generator=torch.Generator().manual_seed(recipe.seed + epoch))
    update = ui.start_epoch(epoch, recipe.epochs, run.batches_per_epoch) if run.main else (lambda done, stats: None)
    run.model.train()
    if recipe.freeze_backbone:
        run.plain_model.eval()  # frozen body: keep BatchNorm statistics as pretrained
    loss_sum, correct, seen, started = 0.0, 0.0, 0, time.perf_counter()
    for raw, targets in loader:
        raw, targets = to_unit_range(raw.to(device)), targets.to(device)
        if recipe.channels_last:
            raw = raw.contiguous(memory_format=torch.channels_last)
        hard_targets = targets
        if run.mixup is not None:
            raw, targets = run.mixup(raw, targets)
        with accelerator.autocast():
            logits = run.model(model_input(raw, run.student_pre, size))
            if run.teacher is not None:
                with torch.no_grad():
                    teacher_logits = run.teacher(model_input(raw, run.teacher_pre))
                loss = distillation_loss(logits, teacher_logits, targets, recipe.distill_alpha,
                                         recipe.distill_temperature, recipe.label_smoothing)
            else:
                loss = label_loss(logits, targets, recipe.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {epoch + 1}, batch {progress.batch + 1}. The last "
                f"good checkpoint is intact ({run.paths['last'].name}, {run.paths['state'].name} in "
                f"{run.paths['state'].parent}). Lower --lr, use fp32 (--mixed-precision no) or check the data.")
        run.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        run.optimizer.step()
        progress.updates += 1
        progress.batch += 1
        run.scheduler.step_update(progress.updates)
        if run.ema is not None:
            run.ema.update(run.plain_model, step=progress.updates)
        loss_sum += loss.item() * len(raw)
        correct += float((logits.argmax(-1) == hard_targets).sum())
        seen += len(raw)
        update(progress.batch, {"loss": loss_sum / seen, "acc": correct / seen,
                                "img_s": seen * world / max(time.perf_counter() - started, 1e-9)})
        if recipe.save_every_steps and progress.updates % recipe.save_every_steps == 0:
            run.save_resume_state()
        if stop.requested:
            break
    return loss_sum, correct, seen, time.perf_counter() - started


def _end_epoch(run: _Run, loss_sum: float, correct: float, seen: int, seconds: float, ui: TrainUI) -> bool:
    """Validation, metrics, best/last checkpoints and the resume state after a complete epoch; returns whether
    early stopping ends the run."""
    recipe, progress, accelerator = run.recipe, run.progress, run.accelerator
    world = accelerator.num_processes
    if world > 1:  # BatchNorm statistics drift apart per process: average them once an epoch
        _average_buffers(run.plain_model, accelerator)
    val_started = time.perf_counter()
    val_loss, val_top1 = _validate(run.eval_model(), run.data.val, recipe.batch_size, accelerator.device,
                                   accelerator.process_index, world,
                                   lambda t: accelerator.reduce(t, reduction="sum"))
    progress.epoch += 1
    progress.batch = 0
    row = {"epoch": progress.epoch, "train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
           "val_loss": val_loss, "val_top1": val_top1, "lr": run.optimizer.param_groups[0]["lr"],
           "train_px": run.train_size(progress.epoch - 1), "train_img_s": seen * world / max(seconds, 1e-9),
           # wall time of this epoch's training steps (since the resume point, in a resumed epoch) and validation
           "train_seconds": seconds, "val_seconds": time.perf_counter() - val_started}
    progress.history.append(row)
    improved = val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss, progress.best_epoch = val_loss, progress.epoch
        progress.epochs_without_improvement = 0
    else:
        progress.epochs_without_improvement += 1
    if run.main:
        metrics = {k: row[k] for k in ("epoch", "val_loss", "val_top1")}
        record = {"split": split_record(recipe.data, recipe.val_fraction, recipe.split_seed, run.paths["split"],
                                          recipe.val)}
        save_checkpoint(run.eval_model(), run.paths["last"], metrics=metrics, source=recipe.model, extra=record)
        if improved:
            save_checkpoint(run.eval_model(), run.paths["best"], metrics=metrics, source=recipe.model, extra=record)
        _write_metrics(run.paths, progress.history)
        ui.log(f"epoch {progress.epoch}/{recipe.epochs}: train loss {row['train_loss']:.4f}, "
               f"val loss {val_loss:.4f}, val top-1 {val_top1:.2%}{' (best)' if improved else ''}")
    run.save_resume_state()
    accelerator.wait_for_everyone()
    if _stops_early(progress, recipe):
        ui.log(f"early stop: val loss has not improved for {recipe.patience} epochs")
        return True
    return False


def _stops_early(progress: Progress, recipe: TrainRecipe) -> bool:
    """Early stopping: `patience` epochs without a lower val loss."""
    return bool(recipe.patience) and progress.epochs_without_improvement >= recipe.patience


def _interrupted(run: _Run, how: str) -> MvkitError:
    out, epoch, batch = run.paths["state"].parent, run.progress.epoch, run.progress.batch
    if batch == 0 and epoch >= run.recipe.epochs:  # every epoch trained: only the curves and confusion are left
        where, then = f"after the last epoch ({epoch} of {run.recipe.epochs}; checkpoints saved)", "Finish"
    elif batch == 0 and epoch > 0:
        where, then = f"after epoch {epoch} of {run.recipe.epochs}", "Continue"
    else:
        where, then = f"at epoch {epoch + 1}, batch {batch}", "Continue"
    return MvkitError(f"{how} {where}; state saved to {run.paths['state']}. "
                      f"{then} with: mvkit train --resume --out {out}")


def refuse_replacing_a_run(out: Path) -> None:
    """A new run into a folder that holds one replaces its checkpoints and resume state as it saves: the same command
    run again without --resume would lose an interrupted hour of training, or a finished model."""
    paths = _out_paths(out)
    if not paths["state"].exists() and not paths["best"].exists():
        return
    choices = "train into another --out, or add --overwrite to start over in this one (replacing it)"
    if not paths["state"].exists():
        raise MvkitError(f"{out} holds a run's checkpoints: {choices}")
    try:
        progress = load_state(paths["state"])["progress"]
        recipe = replace(TrainRecipe(), **read_recipe_file(paths["recipe"]))  # as load_recipe, less its checks
    except MvkitError:
        raise MvkitError(f"{out} holds a run whose resume state or recipe cannot be read: {choices}") from None
    if progress.batch == 0 and (progress.epoch >= recipe.epochs or _stops_early(progress, recipe)):
        raise MvkitError(f"{out} holds a finished run ({progress.epoch} epochs): {choices}")
    where = f"at epoch {progress.epoch + 1} of {recipe.epochs}, batch {progress.batch}" if progress.batch else \
        f"after {progress.epoch} of {recipe.epochs} epochs"
    raise MvkitError(f"{out} holds a run stopped {where}: continue it with `mvkit train --resume --out {out}`, "
                     f"or {choices}")


def train(recipe: TrainRecipe, resume: bool = False, ui: TrainUI | None = None, overwrite: bool = False) -> TrainResult:
    """Run (or resume) a training run into recipe.out. A folder that holds a run is refused unless `resume` continues
    it or `overwrite` starts over in it."""
    ui = ui or TrainUI()
    recipe.validate()
    out = Path(recipe.out)
    paths = _out_paths(out)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        check_writable(out)
    if not resume and not overwrite:  # every process: each would wait for the others at their first collective
        refuse_replacing_a_run(out)
    stop = StopRequest()
    with run_folder_lock(out, main_process), deterministic_algorithms(recipe.deterministic), stop.installed():
        run = _set_up(recipe, resume, paths, ui)
        stopped_early = False
        images_seen, train_seconds = 0, 0.0
        try:
            stop.armed = True
            while run.progress.epoch < recipe.epochs and not stop.requested:
                loss_sum, correct, seen, seconds = _train_one_epoch(run, stop, ui)
                images_seen += seen * run.accelerator.num_processes
                train_seconds += seconds
                if stop.requested and run.progress.batch < run.batches_per_epoch:
                    break  # stopped at a batch boundary inside the epoch
                if _end_epoch(run, loss_sum, correct, seen, seconds, ui):
                    stopped_early = True
                    break
        except KeyboardInterrupt:  # a second signal: stop now; the state saved last is what resumes
            stop.armed = False
            raise MvkitError(f"stopped at once (second interrupt); the resume state saved last is kept in "
                             f"{paths['state']}. Continue with: mvkit train --resume --out {out}") from None
        stop.armed = False
        if stop.requested:
            run.save_resume_state()
            raise _interrupted(run, f"stopped by {stop.signal_name}")
        result = TrainResult(out=out, best_checkpoint=paths["best"], last_checkpoint=paths["last"],
                             history=run.progress.history, best_epoch=run.progress.best_epoch,
                             stopped_early=stopped_early,
                             train_images_per_second=images_seen / train_seconds if train_seconds else 0.0,
                             updates=run.progress.updates, model=run.eval_model(), recipe=run.recipe)
        if run.main and run.progress.history:
            plot_curves(run.progress.history, paths["curves"], mixed=run.recipe.uses_mixing)
            best = load_model(paths["best"])
            evaluation = evaluate(best, run.data.val, batch_size=recipe.batch_size)
            plot_confusion(evaluation, paths["confusion"], title=f"{recipe.model}, best epoch {run.progress.best_epoch}")
            result.val_top1 = evaluation.top1
        run.accelerator.wait_for_everyone()
    return result
