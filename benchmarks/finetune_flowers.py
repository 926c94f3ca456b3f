"""Regenerate the guide's flower fine-tuning table (section 5) on ../shared/data/flowers128.

    .venv/bin/python benchmarks/finetune_flowers.py            # full table + throughput, writes BENCHMARKS.md
    .venv/bin/python benchmarks/finetune_flowers.py --only throughput

Rows (one seeded 80/20 split, the same for all):
  1. EfficientNet-Lite0, ImageNet-pretrained, head only (backbone frozen)
  2. EfficientNet-Lite0, ImageNet-pretrained, full fine-tune (the guide's recipe)
  3. MobileViT-XXS from scratch
  4. MobileViT-XXS distilled from row 2 (same epochs and seed as row 3)
Throughput: `mvkit train` (fp32 and bf16 autocast) against a plain timm training step (timm Mixup,
SoftTargetCrossEntropy, AdamW, fp32) on the same model, batch size and photos, interleaved, medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_markdown import replace_section  # noqa: E402
from mvkit.train import build_recipe, train  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def table_rows(args) -> list[dict]:
    out = Path(args.out)
    common = dict(data=str(args.data), val_fraction=0.2, split_seed=0, seed=0, batch_size=32, patience=None,
                  mixed_precision=args.mixed_precision)
    runs = [
        ("EfficientNet-Lite0 pretrained, head only", "head_only",
         dict(model="tf_efficientnet_lite0", preset="head-only", img_size=args.lite0_size, epochs=args.head_epochs)),
        ("EfficientNet-Lite0 pretrained, full fine-tune", "finetune",
         dict(model="tf_efficientnet_lite0", preset="finetune", img_size=args.lite0_size, epochs=args.finetune_epochs,
              lr=args.finetune_lr, stem_lr=args.finetune_lr / 3, head_lr=args.finetune_lr * 5 / 3)),
        ("MobileViT-XXS from scratch", "scratch",
         dict(model="mobilevit_xxs", preset="scratch", img_size=args.student_size, epochs=args.student_epochs)),
        ("MobileViT-XXS distilled from the fine-tuned Lite0", "distilled",
         dict(model="mobilevit_xxs", preset="scratch", img_size=args.student_size, epochs=args.student_epochs,
              teacher=str(out / "finetune" / "best.safetensors"), distill_alpha=0.5, distill_temperature=4.0)),
    ]
    rows = []
    for title, name, options in runs:
        recipe = build_recipe(out=str(out / name), **common, **options)
        print(f"== {title}: {recipe.epochs} epochs at {recipe.img_size} px", flush=True)
        started = time.perf_counter()
        result = train(recipe)
        minutes = (time.perf_counter() - started) / 60
        params = sum(p.numel() for p in result.model.parameters())
        rows.append({"run": title, "name": name, "val_top1": result.val_top1, "best_epoch": result.best_epoch,
                     "epochs": recipe.epochs, "img_size": recipe.img_size, "params_m": params / 1e6,
                     "train_minutes": minutes, "train_img_s": result.train_images_per_second,
                     "lr": recipe.lr, "preset": recipe.preset, "mixed_precision": recipe.mixed_precision})
        print(json.dumps(rows[-1]), flush=True)
    return rows


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
    for model_name, size in (("tf_efficientnet_lite0", args.lite0_size), ("mobilevit_xxs", args.student_size)):
        measured: dict[str, list[float]] = {"timm": [], "mvkit fp32": [], "mvkit bf16": []}
        for _ in range(args.rounds):
            measured["timm"].append(timm_reference_img_s(model_name, subset, size, 32, steps))
            for precision, key in (("no", "mvkit fp32"), ("bf16", "mvkit bf16")):
                recipe = build_recipe(model=model_name, data=str(subset), preset="scratch", img_size=size, epochs=1,
                                      batch_size=32, warmup_epochs=0.0, patience=None, mixed_precision=precision,
                                      out=str(Path(args.out) / f"throughput_{model_name}_{precision}"))
                measured[key].append(train(recipe).train_images_per_second)
        medians = {k: statistics.median(v) for k, v in measured.items()}
        rows.append({"model": model_name, "img_size": size, "batch_size": 32, "rounds": args.rounds,
                     **{f"{k} img/s": v for k, v in medians.items()},
                     "fp32 / timm": medians["mvkit fp32"] / medians["timm"],
                     "bf16 / timm": medians["mvkit bf16"] / medians["timm"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_markdown(results: dict, command: str) -> None:
    lines = ["## Fine-tuning on flowers128 (the guide's section 5 table)", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}. Split: seeded 80/20 stratified (2,784 train / 698 val).", ""]
    if results.get("table"):
        lines += [f"Command: `{results.get('table_command', command)}`", "","| run | val top-1 | params (M) | input px | lr | precision | epochs (best) | train minutes | training img/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in results["table"]:
            lines.append(f"| {row['run']} | {row['val_top1']:.1%} | {row['params_m']:.2f} | {row['img_size']} | {row['lr']:g} | "
                         f"{row['mixed_precision']} | {row['epochs']} ({row['best_epoch']}) | {row['train_minutes']:.1f} | "
                         f"{row['train_img_s']:.1f} |")
        lines.append("")
    if results.get("throughput"):
        lines += [f"Command: `{results.get('throughput_command', command)}`", "","Training throughput, same model, batch 32 and 640 photos; medians of interleaved rounds:", "",
                  "| model | px | timm step img/s | mvkit fp32 img/s | mvkit bf16 img/s | fp32 / timm | bf16 / timm |",
                  "|---|---|---|---|---|---|---|"]
        for row in results["throughput"]:
            lines.append(f"| {row['model']} | {row['img_size']} | {row['timm img/s']:.1f} | {row['mvkit fp32 img/s']:.1f} | "
                         f"{row['mvkit bf16 img/s']:.1f} | {row['fp32 / timm']:.2f} | {row['bf16 / timm']:.2f} |")
        lines.append("")
    replace_section("finetune_flowers", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flowers128")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_flowers")
    parser.add_argument("--only", choices=["table", "throughput"], default=None)
    parser.add_argument("--lite0-size", type=int, default=224)
    parser.add_argument("--student-size", type=int, default=128)
    parser.add_argument("--head-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--finetune-lr", type=float, default=3e-4,
                        help="body lr; stem and head get 1/3 and 5/3 of it, the guide's ratios (its 3e-5 needs ~100 epochs)")
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"flowers128 not found at {args.data}")
    torch.set_num_threads(torch.get_num_threads())
    results_file = RESULTS / "finetune_flowers.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    command = "python benchmarks/finetune_flowers.py " + shlex.join(sys.argv[1:])
    if args.only in (None, "table"):
        results["table"] = table_rows(args)
        results["table_command"] = command
    if args.only in (None, "throughput"):
        results["throughput"] = throughput(args)
        results["throughput_command"] = command
    RESULTS.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=1))
    write_markdown(results, command)


if __name__ == "__main__":
    main()
