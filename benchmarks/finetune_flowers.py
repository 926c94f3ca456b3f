"""Regenerate the guide's flower fine-tuning table (section 5) on ../shared/data/flowers128, with a budget column.

    .venv/bin/python benchmarks/finetune_flowers.py                       # every row, then BENCHMARKS.md
    .venv/bin/python benchmarks/finetune_flowers.py --rows finetune,guide # some rows; the others are kept
    .venv/bin/python benchmarks/finetune_flowers.py --rows timm --timm-train /path/to/timm/train.py
    .venv/bin/python benchmarks/finetune_flowers.py --only throughput

Rows (one seeded 80/20 split, the same for all; `mvkit train` with each preset as a user runs it, only the epochs
set):
  pretrained   EfficientNet-Lite0 with its ImageNet head, as is: classes mapped by name where ImageNet has them
  head_only    --preset head-only (backbone frozen)
  finetune     --preset finetune, the default (input at the photos' native 128 px)
  finetune_224 the same at the model's 224 px (the resolution question)
  progressive  the same at 224 px with progressive resizing from 128 px (--progressive-from 128)
  guide        --preset guide, the guide's exact recipe, same epochs as finetune
  timm         timm's own train.py (a snapshot of timm's repository, never committed) with its fine-tuning flags,
               the same split, model, pretrained weights, input size, epochs and hyper-parameters as finetune
  scratch      MobileViT-XXS from scratch (--preset scratch)
  distilled    the same, distilled from the finetune row's checkpoint
Throughput: `mvkit train` (fp32 NCHW, fp32 channels-last, bf16 channels-last) against a plain timm training step on the same model, batch
size and photos, interleaved, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import replace_section  # noqa: E402
from mvkit.train import build_recipe, train  # noqa: E402
from mvkit.train.recipe import FINETUNE  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BUDGET_MINUTES = 60  # the budget for one training run on this machine's 2 cores
TITLES = {
    "pretrained": "EfficientNet-Lite0 ImageNet-pretrained, as is (ImageNet head)",
    "head_only": "EfficientNet-Lite0 pretrained, head only (`head-only`)",
    "finetune": "EfficientNet-Lite0 pretrained, full fine-tune (`finetune`, the default)",
    "finetune_224": "EfficientNet-Lite0 pretrained, full fine-tune (`finetune` at 224 px)",
    "progressive": "EfficientNet-Lite0 pretrained, full fine-tune (`finetune` at 224 px, progressive from 128 px)",
    "guide": "EfficientNet-Lite0 pretrained, full fine-tune (`guide`: the guide's recipe)",
    "timm": "EfficientNet-Lite0 pretrained, full fine-tune (timm's train.py, peer)",
    "scratch": "MobileViT-XXS from scratch (`scratch`)",
    "distilled": "MobileViT-XXS distilled from the `finetune` row (`scratch` + teacher)",
}


def common(args) -> dict:
    return dict(data=str(args.data), val_fraction=0.2, split_seed=0, seed=0)


def recipe_rows(args) -> dict[str, dict]:
    """The rows that run `mvkit train`: recipe options beyond the preset's."""
    out = Path(args.out)
    lite0 = dict(model="tf_efficientnet_lite0", epochs=args.finetune_epochs)
    return {
        "head_only": dict(model="tf_efficientnet_lite0", preset="head-only", epochs=args.head_epochs),
        "finetune": dict(lite0, preset="finetune"),
        "finetune_224": dict(lite0, preset="finetune", img_size=224, epochs=args.epochs_224 or args.finetune_epochs),
        "progressive": dict(lite0, preset="finetune", img_size=224, progressive_from=128,
                            epochs=args.epochs_224 or args.finetune_epochs),
        "guide": dict(lite0, preset="guide", epochs=args.guide_epochs or args.finetune_epochs or FINETUNE["epochs"]),
        "scratch": dict(model="mobilevit_xxs", preset="scratch", epochs=args.student_epochs),
        "distilled": dict(model="mobilevit_xxs", preset="scratch", epochs=args.student_epochs,
                          teacher=str(out / "finetune" / "best.safetensors")),
    }


def run_recipe(name: str, options: dict, args) -> dict:
    from mvkit.models import preprocess_of

    recipe = build_recipe(out=str(Path(args.out) / name), **common(args), **options)
    started = time.perf_counter()
    result = train(recipe, overwrite=True)  # a benchmark rerun replaces its own runs
    minutes = (time.perf_counter() - started) / 60
    resolved = result.recipe
    return {"val_top1": result.val_top1, "best_epoch": result.best_epoch, "epochs": resolved.epochs,
            "img_size": resolved.img_size or preprocess_of(result.model).size, "params_m": sum(p.numel() for p in result.model.parameters()) / 1e6,
            "train_minutes": minutes, "train_img_s": result.train_images_per_second, "lr": resolved.lr,
            "preset": resolved.preset, "mixed_precision": resolved.mixed_precision,
            "curve": [round(row["val_top1"], 4) for row in result.history],
            # what each epoch cost at its training size (progressive resizing changes it per epoch)
            "epoch_px": [row["train_px"] for row in result.history],
            "epoch_train_seconds": [round(row["train_seconds"], 1) for row in result.history]}


def pretrained_as_is(args) -> dict:
    """The ImageNet classifier on the val photos: a class counts where ImageNet has a class of that name."""
    from mvkit.data import load_data
    from mvkit.data.datasets import with_transform
    from mvkit.inference import predict_probabilities
    from mvkit.models import create_model, labels_of, preprocess_of

    data = load_data(args.data, val_fraction=0.2, seed=0, write_split=False)
    model = create_model("tf_efficientnet_lite0", pretrained=True)
    labels = [label.lower() for label in labels_of(model)]
    mapped = {i: labels.index(name.lower()) for i, name in enumerate(data.classes) if name.lower() in labels}
    val = with_transform(data.val, preprocess_of(model).eval_transform())
    probabilities, targets = predict_probabilities(model, val, 64, 0, None)
    predicted = probabilities.argmax(-1)
    recall = {data.classes[c]: float((predicted[targets == c] == m).float().mean()) for c, m in mapped.items()}
    top1 = None
    if len(mapped) == len(data.classes):
        top1 = float(sum((predicted[targets == c] == m).sum() for c, m in mapped.items()) / len(targets))
    return {"val_top1": top1, "mapped_recall": recall, "img_size": preprocess_of(model).size, "epochs": 0,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "train_minutes": 0.0}


def timm_peer(args) -> dict:
    """timm's train.py in its own process: the finetune row's split as an ImageFolder tree of links, the same
    ImageNet weights through --pretrained-path (timm swaps in a new head), the finetune preset's settings."""
    from mvkit.models import create_model

    if not args.timm_train or not Path(args.timm_train).is_file():
        sys.exit("the timm row needs --timm-train PATH: train.py from a snapshot of "
                 "https://github.com/huggingface/pytorch-image-models")
    from mvkit.data import load_data
    from mvkit.models import preprocess_of
    from mvkit.train.recipe import native_input_size

    finetune = build_recipe(preset="finetune", model="tf_efficientnet_lite0", epochs=args.finetune_epochs,
                            **common(args))
    row_dir = Path(args.out) / "timm"
    row_dir.mkdir(parents=True, exist_ok=True)
    # the seeded split every row gets, as an ImageFolder tree of links
    data = load_data(args.data, val_fraction=finetune.val_fraction, seed=finetune.split_seed,
                     split_file=row_dir / "split.json")
    tree = row_dir / "data"
    for dataset, folder in ((data.train, "train"), (data.val, "validation")):
        for path, label in dataset.samples:
            link = tree / folder / data.classes[label] / Path(path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(Path(path).resolve())
    model_size = preprocess_of(create_model("tf_efficientnet_lite0", num_classes=2)).size
    size = native_input_size(finetune, model_size, data.photo_sizes) or model_size
    weights = row_dir / "lite0_imagenet.pth"
    torch.save(create_model("tf_efficientnet_lite0", pretrained=True).state_dict(), weights)
    flags = ["--data-dir", str(tree), "--model", "tf_efficientnet_lite0", "--pretrained", "--pretrained-path",
             str(weights), "--num-classes", str(len(data.classes)), "--img-size", str(size),
             "--epochs", str(finetune.epochs), "-b", str(finetune.batch_size), "--opt", "adamw",
             "--lr", str(finetune.lr), "--weight-decay", str(finetune.weight_decay), "--sched", "cosine", "--sched-on-updates",
             "--warmup-epochs", str(int(finetune.warmup_epochs)), "--warmup-lr", str(finetune.lr * 0.01),
             "--min-lr", str(finetune.min_lr), "--smoothing", str(finetune.label_smoothing),
             "--mixup", str(finetune.mixup_alpha), "--cutmix", str(finetune.cutmix_alpha),
             "--mixup-prob", str(finetune.mix_prob), "--mixup-switch-prob", str(finetune.mix_switch_prob),
             "--drop", str(finetune.drop_rate), "--drop-path", str(finetune.drop_path_rate), "--scale", str(finetune.scale_min), "1.0", "--hflip", "0.5",
             "--color-jitter", "0", "--reprob", "0", "--aa", "", "--device", "cpu", "--no-prefetcher",
             "--workers", "0", "--seed", "0", "--output", str(row_dir / "output"), "--experiment", "run",
             "--log-interval", "1000", "--checkpoint-hist", "1"]
    if finetune.channels_last:
        flags.append("--channels-last")
    if finetune.mixed_precision == "bf16":
        flags += ["--amp", "--amp-dtype", "bfloat16"]
    command = [sys.executable, str(args.timm_train), *flags]
    print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    minutes = (time.perf_counter() - started) / 60
    summary = (row_dir / "output" / "run" / "summary.csv").read_text().splitlines()
    header, rows = summary[0].split(","), [line.split(",") for line in summary[1:]]
    top1 = [float(row[header.index("eval_top1")]) / 100 for row in rows]
    return {"val_top1": max(top1), "last_top1": top1[-1], "best_epoch": top1.index(max(top1)) + 1,
            "epochs": len(rows), "img_size": size, "params_m": None, "train_minutes": minutes,
            "lr": finetune.lr, "preset": "timm train.py", "mixed_precision": finetune.mixed_precision,
            "curve": [round(t, 4) for t in top1],
            "command": "python train.py " + " ".join(re.sub(r"^/\S+/", "", f) for f in flags)}


def timm_reference_img_s(model_name: str, data_csv: Path, size: int, batch_size: int, steps: int) -> float:
    """A plain timm training loop over the same photos: timm transforms, Mixup, SoftTargetCrossEntropy, AdamW."""
    import timm
    from timm.data import Mixup, create_transform
    from timm.loss import SoftTargetCrossEntropy

    from mvkit.data import load_data

    data = load_data(data_csv)
    model = timm.create_model(model_name, num_classes=len(data.classes))
    cfg = model.pretrained_cfg
    data.train.transform = create_transform(input_size=(3, size, size), is_training=True, scale=(0.5, 1.0),
                                            color_jitter=None, interpolation=cfg["interpolation"],
                                            mean=cfg["mean"], std=cfg["std"])
    loader = torch.utils.data.DataLoader(data.train, batch_size=batch_size, shuffle=True, drop_last=True)
    mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, switch_prob=0.5, label_smoothing=0.1,
                  num_classes=len(data.classes))
    criterion = SoftTargetCrossEntropy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    model.train()
    seen, started = 0, time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        if step == steps:
            break
        images, targets = mixup(images, targets)
        loss = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(images)
    return seen / (time.perf_counter() - started)


def throughput(args) -> list[dict]:
    """Interleaved rounds: timm reference, mvkit fp32, mvkit bf16, on the same 640 photos, batch 32."""
    subset = Path(args.out) / "throughput.csv"
    subset.parent.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,split"]
    for class_dir in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        photos = sorted(class_dir.glob("*.jpg"))
        lines += [f"{p},{class_dir.name},train" for p in photos[:128]] + [f"{p},{class_dir.name},val" for p in photos[128:136]]
    subset.write_text("\n".join(lines) + "\n")
    steps = 640 // 32
    rows = []
    for model_name, size in (("tf_efficientnet_lite0", 224), ("mobilevit_xxs", 128)):
        measured: dict[str, list[float]] = {"timm": [], "mvkit fp32 NCHW": [], "mvkit fp32": [], "mvkit bf16": []}
        for _ in range(args.rounds):
            measured["timm"].append(timm_reference_img_s(model_name, subset, size, 32, steps))
            for precision, channels_last, key in (("no", False, "mvkit fp32 NCHW"), ("no", True, "mvkit fp32"),
                                                  ("bf16", True, "mvkit bf16")):
                recipe = build_recipe(model=model_name, data=str(subset), preset="scratch", img_size=size, epochs=1,
                                      batch_size=32, warmup_epochs=0.0, patience=None, mixed_precision=precision,
                                      channels_last=channels_last, out=str(Path(args.out) / f"throughput_{key}"))
                measured[key].append(train(recipe, overwrite=True).train_images_per_second)
        medians = {k: statistics.median(v) for k, v in measured.items()}
        rows.append({"model": model_name, "img_size": size, "batch_size": 32, "rounds": args.rounds,
                     **{f"{k} img/s": v for k, v in medians.items()},
                     "fp32 NCHW / timm": medians["mvkit fp32 NCHW"] / medians["timm"],
                     "fp32 / timm": medians["mvkit fp32"] / medians["timm"],
                     "bf16 / timm": medians["mvkit bf16"] / medians["timm"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _top1_text(row: dict) -> str:
    if row.get("val_top1") is not None:
        return f"{row['val_top1']:.1%}"
    recall = ", ".join(f"{name} recall {value:.0%}" for name, value in row.get("mapped_recall", {}).items())
    return f"n/a (ImageNet has {len(row.get('mapped_recall', {}))} of the classes: {recall})"


def write_markdown(results: dict) -> None:
    lines = ["## Fine-tuning on flowers128 (the guide's section 5 table)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}. Split: seeded 80/20 stratified (2,784 train / 698 val). Budget: at most "
             f"{BUDGET_MINUTES} minutes of training per run on this machine.", ""]
    table = results.get("rows", {})
    if table:
        lines += ["| run | val top-1 | input px | epochs (best) | train minutes | within budget | training img/s | threads | command |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in TITLES:
            if name not in table:
                continue
            row = table[name]
            img_s = f"{row['train_img_s']:.1f}" if row.get("train_img_s") else ""
            budget = "yes" if row["train_minutes"] <= BUDGET_MINUTES else "**no**"
            epochs = f"{row['epochs']} ({row['best_epoch']})" if row.get("best_epoch") else str(row["epochs"])
            lines.append(f"| {TITLES[name]} | {_top1_text(row)} | {row['img_size']} | {epochs} | "
                         f"{row['train_minutes']:.1f} | {budget} | {img_s} | {row.get('threads', '')} | `{row['command']}` |")
        lines += ["", "Val top-1 per epoch:", ""]
        lines += [f"- {name}: " + ", ".join(f"{t:.1%}" for t in table[name]["curve"])
                  for name in TITLES if table.get(name, {}).get("curve")]
        lines.append("")
    if results.get("throughput"):
        lines += [f"Command: `{results['throughput_command']}`", "",
                  "Training throughput, same model, batch 32 and 640 photos; medians of interleaved rounds:", "",
                  "| model | px | timm step img/s | mvkit fp32 NCHW img/s | mvkit fp32 img/s | mvkit bf16 img/s | "
                  "fp32 NCHW / timm | fp32 / timm | bf16 / timm |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in results["throughput"]:
            nchw, nchw_ratio = row.get("mvkit fp32 NCHW img/s"), row.get("fp32 NCHW / timm")
            lines.append(f"| {row['model']} | {row['img_size']} | {row['timm img/s']:.1f} | "
                         f"{'' if nchw is None else f'{nchw:.1f}'} | {row['mvkit fp32 img/s']:.1f} | "
                         f"{row['mvkit bf16 img/s']:.1f} | {'' if nchw_ratio is None else f'{nchw_ratio:.2f}'} | "
                         f"{row['fp32 / timm']:.2f} | {row['bf16 / timm']:.2f} |")
        lines.append("")
    replace_section("finetune_flowers", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flowers128")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_flowers")
    parser.add_argument("--rows", default=",".join(TITLES), help="comma-separated: " + ", ".join(TITLES))
    parser.add_argument("--only", choices=["table", "throughput"], default=None)
    parser.add_argument("--timm-train", type=Path, default=None, help="timm's train.py, for the timm row")
    parser.add_argument("--head-epochs", type=int, default=None, help="default: the head-only preset's")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default: the finetune preset's")
    parser.add_argument("--epochs-224", type=int, default=None, help="default: --finetune-epochs")
    parser.add_argument("--guide-epochs", type=int, default=None, help="default: --finetune-epochs (the guide: 100)")
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"flowers128 not found at {args.data}")
    command = "python benchmarks/finetune_flowers.py " + shlex.join(sys.argv[1:])
    if args.only in (None, "table"):
        wanted = [name.strip() for name in args.rows.split(",") if name.strip()]
        unknown = set(wanted) - set(TITLES)
        if unknown:
            sys.exit(f"unknown rows {sorted(unknown)}; choose from {', '.join(TITLES)}")
        recipes = recipe_rows(args)
        for name in wanted:
            print(f"== {TITLES[name]}", flush=True)
            if name == "pretrained":
                row = pretrained_as_is(args)
            elif name == "timm":
                row = timm_peer(args)
            else:
                row = run_recipe(name, {k: v for k, v in recipes[name].items() if v is not None}, args)
            row.setdefault("command", command)
            row["threads"] = torch.get_num_threads()
            print(json.dumps(row), flush=True)
            update_results(lambda results: results.setdefault("rows", {}).__setitem__(name, row))
    if args.only in (None, "throughput"):
        rows = throughput(args)
        update_results(lambda results: results.update(throughput=rows, throughput_command=command))
    write_markdown(update_results(lambda results: None))


def update_results(change) -> dict:
    """Read, change and write the results file at once: rows run by separate processes each keep theirs."""
    results_file = RESULTS / "finetune_flowers.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.pop("table", None)  # the old layout
    change(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
