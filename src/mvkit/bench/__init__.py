"""Benchmark artifacts side by side: latency p50/p90 at batch 1, throughput at batch N, peak memory, file size,
params, accuracy on real photos and agreement with the source checkpoint, as one table (like `yolo benchmark`).

Latency rounds are interleaved across artifacts (one call each per round) so that machine noise hits all
alike, with a short pause before each timed call: runtimes keep their worker threads spinning for a while
after a call (OpenBLAS under numpy about 0.1 s, ONNX Runtime), and on 2 cores those spinning threads slowed
the next runtime by half (PyTorch eager MobileViT-S 75 -> 118 ms right after the numpy Core ML interpreter).
Peak memory is measured in a fresh process per artifact, so one runtime's memory never counts for
another's.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from mvkit.runtime import Predictor, load_predictor


@dataclass
class BenchRow:
    artifact: str
    format: str
    file_mb: float
    params_m: float | None
    threads: int
    latency_p50_ms: float
    latency_p90_ms: float
    batch: int
    throughput_img_s: float
    peak_rss_mb: float | None
    top1: float | None = None
    agreement: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def file_size_mb(path: Path) -> float:
    path = Path(path)
    if path.is_dir():  # .mlpackage
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def _peak_rss_worker(path: str, batch: np.ndarray, queue) -> None:
    predictor = load_predictor(path)
    for _ in range(5):
        predictor.run(batch)
    queue.put(_high_water_rss_mb())


def _high_water_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
    from the forked parent image across exec, so every child would report at least its parent's size."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if os.uname().sysname == "Linux" else 1024 * 1024)


def peak_rss_mb(path: Path, batch: np.ndarray) -> float | None:
    """Peak resident memory of a fresh process that loads the artifact and runs it (spawned: clean start)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_rss_worker, args=(str(path), batch, queue))
    process.start()
    process.join(timeout=600)
    return queue.get() if process.exitcode == 0 and not queue.empty() else None


def _params_m(predictor: Predictor) -> float | None:
    """From the sidecar (recorded at export); for checkpoints, counted on the model."""
    if predictor.artifact.extra.get("params"):
        return predictor.artifact.extra["params"] / 1e6
    model = getattr(predictor, "model", None)
    count = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
    return count / 1e6 if count else None


SETTLE_S = 0.2  # pause before each timed call, longer than OpenBLAS's default spin-wait (2**28 cycles)


def bench(paths: list[Path], photos: list[Image.Image], rounds: int = 30, warmup: int = 3, batch: int = 8,
          measure_memory: bool = True, on_progress: Callable[[int], None] | None = None) -> list[BenchRow]:
    """Time every artifact on the same real photos; returns one row per artifact."""
    predictors = [load_predictor(p) for p in paths]
    singles = [p.prepare(photos[:1]) for p in predictors]
    batches = [p.prepare((photos * batch)[:batch]) for p in predictors]
    for predictor, single in zip(predictors, singles):
        for _ in range(warmup):
            predictor.run(single)
    latencies: list[list[float]] = [[] for _ in predictors]
    for _ in range(rounds):  # interleaved: each round runs every artifact once
        for index, (predictor, single) in enumerate(zip(predictors, singles)):
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            predictor.run(single)
            latencies[index].append((time.perf_counter() - started) * 1000)
        if on_progress:
            on_progress(1)
    throughputs: list[list[float]] = [[] for _ in predictors]
    for _ in range(max(3, rounds // 10)):
        for index, (predictor, full) in enumerate(zip(predictors, batches)):
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            predictor.run(full)
            throughputs[index].append(batch / (time.perf_counter() - started))
    rows = []
    for path, predictor, single, times, speeds in zip(paths, predictors, singles, latencies, throughputs):
        rows.append(BenchRow(
            artifact=str(path), format=predictor.artifact.format, file_mb=round(file_size_mb(Path(path)), 2),
            params_m=_params_m(predictor), threads=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
            latency_p50_ms=float(np.percentile(times, 50)), latency_p90_ms=float(np.percentile(times, 90)),
            batch=batch, throughput_img_s=float(np.median(speeds)),
            peak_rss_mb=peak_rss_mb(Path(path), single) if measure_memory else None))
    return rows


def add_accuracy(rows: list[BenchRow], data: str, limit: int | None = None) -> list:
    """Fill top-1 and agreement of each row by verifying it on real photos; returns the VerifyReports.
    A checkpoint is its own reference: agreement 1 by definition, accuracy measured."""
    from mvkit.verify import verify

    reports = []
    for row in rows:
        reference = row.artifact if row.format == "safetensors" else None
        report = verify(row.artifact, data, limit=limit, reference=reference)
        row.top1, row.agreement = report.artifact_top1, report.agreement
        reports.append(report)
    return reports


def markdown_table(rows: list[BenchRow]) -> str:
    lines = ["| artifact | format | MB | params M | threads | p50 ms | p90 ms | img/s (batch) | peak RSS MB | top-1 | agreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        lines.append(f"| {Path(r.artifact).name} | {r.format} | {r.file_mb:.1f} | {cell(r.params_m, '.2f')} | {r.threads} | "
                     f"{r.latency_p50_ms:.1f} | {r.latency_p90_ms:.1f} | {r.throughput_img_s:.1f} ({r.batch}) | "
                     f"{cell(r.peak_rss_mb, '.0f')} | {cell(r.top1, '.1%')} | {cell(r.agreement, '.1%')} |")
    return "\n".join(lines)


def write_results(rows: list[BenchRow], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps([r.to_dict() for r in rows], indent=1))
    (out / "bench.md").write_text(markdown_table(rows) + "\n")
