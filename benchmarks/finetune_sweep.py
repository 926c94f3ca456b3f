"""Recipe variants of `mvkit train` side by side, one process each, on whatever device torch finds.

    .venv/bin/python benchmarks/finetune_sweep.py --data ../shared/data/flowers128 --parallel 2
    .venv/bin/python benchmarks/finetune_sweep.py --variants base15,ema30 --deadline 3600

Each variant is the `finetune` preset (EfficientNet-Lite0, ImageNet-pretrained, the table's seeded 80/20 split) with
a few options changed: the equivalent of `mvkit train tf_efficientnet_lite0 DATA --OPTION VALUE ...`. Variants run
in priority order, `--parallel` at a time; at `--deadline` seconds the ones still running are stopped and reported
with the epochs they finished. One JSON line per variant goes to `--results`: its options, the val top-1 of every
epoch, the best checkpoint's (lowest val loss) and the highest.

On a GPU this answers in minutes what the 2-core CPU needs hours for: which recipes are worth a CPU run within
the fine-tuning budget (60 minutes of training on 2 cores: about 36 epochs at 224 px at the 27.9 img/s
measured there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RA = "rand-m9-mstd0.5-inc1"  # timm's RandAugment at its ImageNet strength
# name -> options beyond the preset, most telling first (the first ones fit the CPU budget)
VARIANTS: dict[str, dict] = {
    "base15": {},
    "ema30": {"epochs": 30, "ema": True, "ema_decay": 0.998},
    "px224_ema30": {"img_size": 224, "epochs": 30, "ema": True, "ema_decay": 0.998},
    "px224_ra_ema60": {"img_size": 224, "epochs": 60, "auto_augment": RA, "ema": True, "ema_decay": 0.998},
    "ema60": {"epochs": 60, "ema": True, "ema_decay": 0.998},
    "base15_seed1": {"seed": 1},
    "px160_ema40": {"img_size": 160, "epochs": 40, "ema": True, "ema_decay": 0.998},
    "ra_ema30": {"epochs": 30, "auto_augment": RA, "ema": True, "ema_decay": 0.998},
    "scale008_ema30": {"epochs": 30, "scale_min": 0.08, "ema": True, "ema_decay": 0.998},
    "lr1e-3": {"lr": 1e-3},
    "lr2.5e-4": {"lr": 2.5e-4},
    "mix0.5": {"mix_prob": 0.5},
    "mix0.5_ema30": {"epochs": 30, "mix_prob": 0.5, "ema": True, "ema_decay": 0.998},
    "px288_ema30": {"img_size": 288, "epochs": 30, "ema": True, "ema_decay": 0.998},
    "base15_seed2": {"seed": 2},
    "reg_ema30": {"epochs": 30, "drop_rate": 0.3, "drop_path_rate": 0.2, "ema": True, "ema_decay": 0.998},
    "plain15": {"mix_prob": 0.0, "label_smoothing": 0.0, "drop_rate": 0.0, "drop_path_rate": 0.0},
    "bs64_lr1e-3_ema30": {"batch_size": 64, "lr": 1e-3, "epochs": 30, "ema": True, "ema_decay": 0.998},
}


def run_one(name: str, options: dict, data: str, out: Path, workers: int) -> None:
    """In a child process: one `mvkit train` run, the result as one JSON line on stdout."""
    sys.path.insert(0, str(REPO / "src"))
    from mvkit.train import build_recipe, train

    recipe = build_recipe(preset="finetune", model="tf_efficientnet_lite0", data=data, val_fraction=0.2,
                          split_seed=0, out=str(out / name), workers=workers, **{"seed": 0, **options})
    started = time.perf_counter()
    result = train(recipe, overwrite=True)  # a benchmark rerun replaces its own runs
    print(json.dumps({"best_checkpoint_top1": result.val_top1, "best_epoch": result.best_epoch,
                      "minutes": (time.perf_counter() - started) / 60,
                      "train_img_s": result.train_images_per_second}))


def summary(name: str, options: dict, out: Path, finished: dict | None) -> dict:
    metrics = out / name / "metrics.json"
    history = json.loads(metrics.read_text()) if metrics.is_file() else []
    curve = [round(row["val_top1"], 4) for row in history]
    row = {"variant": name, "options": options, "epochs_done": len(curve), "curve": curve,
           "highest_top1": max(curve, default=None), "last_top1": curve[-1] if curve else None,
           "finished": finished is not None}
    if history:  # the checkpoint a run keeps: lowest val loss
        best = min(history, key=lambda r: r["val_loss"])
        row["lowest_val_loss_top1"], row["lowest_val_loss_epoch"] = round(best["val_top1"], 4), best["epoch"]
    return {**row, **(finished or {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "flowers128"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names, in priority order")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes per run")
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds; runs still going are stopped")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "finetune_sweep")
    parser.add_argument("--results", type=Path, default=None, help="JSON lines; default OUT/results.jsonl")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, VARIANTS[args.one], args.data, args.out, args.workers)
        return
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    results = args.results or args.out / "results.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    started, waiting, running = time.time(), list(names), {}
    while waiting or running:
        while waiting and len(running) < args.parallel:
            name = waiting.pop(0)
            log = (args.out / f"{name}.log").open("w")
            command = [sys.executable, __file__, "--one", name, "--data", args.data, "--out", str(args.out),
                       "--workers", str(args.workers)]
            running[name] = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env), log)
            print(f"{time.time() - started:6.0f} s  start {name}", flush=True)
        time.sleep(2)
        overdue = time.time() - started > args.deadline
        for name, (process, log) in list(running.items()):
            if process.poll() is None and not overdue:
                continue
            if process.poll() is None:
                process.kill()
            stdout = process.communicate()[0]
            log.close()
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            finished = json.loads(lines[-1]) if process.returncode == 0 and lines else None
            row = summary(name, VARIANTS[name], args.out, finished)
            if process.returncode not in (0, -9):
                row["error"] = (args.out / f"{name}.log").read_text()[-2000:]
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{time.time() - started:6.0f} s  done {name}: {row['epochs_done']} epochs, highest "
                  f"{row['highest_top1']}, lowest-val-loss checkpoint {row.get('lowest_val_loss_top1')}", flush=True)
            del running[name]
        if overdue:
            waiting.clear()


if __name__ == "__main__":
    main()
