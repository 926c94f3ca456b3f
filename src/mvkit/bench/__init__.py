"""Benchmark artifacts side by side: latency p50/p90 at batch 1, throughput at batch N, peak memory, file size,
params, accuracy on real photos and agreement with the source checkpoint, as one table (like `yolo benchmark`).

Latency rounds are interleaved across artifacts (one call each per round) so that machine noise hits all
alike, with a short pause before each timed call: runtimes keep their worker threads spinning for a while
after a call (OpenBLAS under numpy about 0.1 s, ONNX Runtime), and on 2 cores those spinning threads slowed
the next runtime by half (PyTorch eager MobileViT-S 75 -> 118 ms right after the numpy Core ML interpreter).
Peak memory is measured in a fresh process per artifact (two at a time), so one runtime's memory never counts
for another's.
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

from mvkit.errors import MvkitError
from mvkit.runtime import Predictor, load_predictor


@dataclass
class BenchRow:
    artifact: str
    format: str
    # exported / loaded / verified / int8 within budget / below threshold / failed: reason (as `yolo benchmark`: a failing format
    # gets its row, the table goes on)
    status: str = "loaded"
    file_mb: float | None = None
    params_m: float | None = None
    threads: int | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    batch: int | None = None
    throughput_img_s: float | None = None
    peak_rss_mb: float | None = None
    top1: float | None = None
    agreement: float | None = None
    runtime: str | None = None  # what ran it: a Core ML package off macOS runs in mvkit's numpy interpreter

    @property
    def ok(self) -> bool:
        return not self.status.startswith("failed")

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
    queue.put(high_water_rss_mb())


def high_water_rss_mb() -> float:
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


def peak_rss_many(jobs: list[tuple[Path, np.ndarray]], parallel: int = 2) -> list[float | None]:
    """peak_rss_mb of each (artifact, batch), `parallel` fresh processes at a time. Each artifact still has a
    process of its own, so running two side by side changes no number, only the wall time (mostly imports)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda job: peak_rss_mb(*job), jobs))


def _params_m(predictor: Predictor) -> float | None:
    """From the sidecar (recorded at export); for checkpoints, counted on the model."""
    if predictor.artifact.extra.get("params"):
        return predictor.artifact.extra["params"] / 1e6
    model = getattr(predictor, "model", None)
    count = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
    return count / 1e6 if count else None


SETTLE_S = 0.2  # pause before each timed call, longer than OpenBLAS's default spin-wait (2**28 cycles)


def failed_row(path: Path | str, fmt: str, error: Exception) -> BenchRow:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BenchRow(artifact=str(path), format=fmt, status=f"failed: {reason}")


def bench(paths: list[Path], photos: list[Image.Image], rounds: int = 30, warmup: int = 3, batch: int = 8,
          measure_memory: bool = True, on_progress: Callable[[int], None] | None = None) -> list[BenchRow]:
    """Time every artifact on the same real photos; returns one row per artifact, in order. An artifact that
    cannot be loaded or run gets a failed row; the others are still measured."""
    from mvkit.artifact import Artifact

    loaded, failed = {}, {}
    for index, path in enumerate(paths):
        try:
            predictor = load_predictor(path)
            predictor.run(predictor.prepare(photos[:1]))
            loaded[index] = predictor
        except MvkitError as exc:
            try:
                fmt = Artifact.load(Path(path)).format
            except MvkitError:
                fmt = "?"
            failed[index] = failed_row(path, fmt, exc)
    measured = iter(bench_predictors(list(loaded.values()), photos, rounds, warmup, batch, on_progress,
                                     paths=[paths[i] for i in loaded], measure_memory=measure_memory))
    return [failed[i] if i in failed else next(measured) for i in range(len(paths))]


def bench_predictors(predictors: list[Predictor], photos: list[Image.Image], rounds: int = 30, warmup: int = 3,
                     batch: int = 8, on_progress: Callable[[int], None] | None = None,
                     paths: list[Path] | None = None, measure_memory: bool = False) -> list[BenchRow]:
    """Time loaded predictors side by side (any Predictor: benchmarks/peers.py times peer runtimes this way).
    With `paths` (their artifact files), file sizes and, with `measure_memory`, peak memory are filled in."""
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
    memory = peak_rss_many(list(zip(paths, singles))) if measure_memory and paths else [None] * len(predictors)
    rows = []
    for index, (predictor, single, times, speeds) in enumerate(zip(predictors, singles, latencies, throughputs)):
        path = paths[index] if paths else None
        rows.append(BenchRow(
            artifact=str(path) if path else predictor.name, format=predictor.artifact.format,
            file_mb=round(file_size_mb(Path(path)), 2) if path else None,
            params_m=_params_m(predictor), threads=predictor.threads,
            latency_p50_ms=float(np.percentile(times, 50)), latency_p90_ms=float(np.percentile(times, 90)),
            batch=batch, throughput_img_s=float(np.median(speeds)),
            peak_rss_mb=memory[index], runtime=predictor.runtime))
    return rows


def add_accuracy(rows: list[BenchRow], data: str, limit: int | None = None) -> list:
    """Fill top-1, agreement and status of each measured row by verifying it on real photos; returns the
    VerifyReports. A checkpoint is its own reference: agreement 1 by definition, accuracy measured. The data is
    decoded once per split, not once per row."""
    from mvkit.verify import verify

    decoded: dict = {}
    reports = []
    for row in rows:
        if not row.ok:
            continue
        reference = row.artifact if row.format == "safetensors" else None
        try:
            report = verify(row.artifact, data, limit=limit, reference=reference, decoded=decoded)
        except MvkitError as exc:
            row.status = failed_row(row.artifact, row.format, exc).status
            continue
        row.top1, row.agreement = report.artifact_top1, report.agreement
        row.status = verified_status(report.passed, is_quantized(row.artifact), report.artifact_top1,
                                     report.reference_top1)
        reports.append(report)
    return reports


INT8_BUDGET_PT = 1.0  # the most top-1 an int8 artifact may lose against its checkpoint and still be shipped
IN_INT8_BUDGET = "int8 within budget"  # the status of an int8 artifact below the agreement threshold that passes
SHIPPABLE = ("verified", IN_INT8_BUDGET)


def passes_verification(status: str, quantized: bool, top1: float | None, reference_top1: float | None,
                        int8_budget_pt: float = INT8_BUDGET_PT) -> bool:
    """Shippable: a float artifact at its agreement threshold ("verified"), or an int8 one whose top-1 on the same
    photos is at most `int8_budget_pt` below its checkpoint's (used by bench and compare)."""
    return status in SHIPPABLE or (quantized and within_int8_budget(top1, reference_top1, int8_budget_pt))


def is_quantized(artifact: str | Path) -> bool:
    """An int8 file (its sidecar or own record says how it was quantized): judged by its accuracy budget."""
    from mvkit.artifact import Artifact

    return bool(Artifact.load(Path(artifact)).extra.get("quantization"))


def verified_status(passed: bool, quantized: bool, top1: float | None, reference_top1: float | None) -> str:
    """A row's status after verification; the table and the fastest verified artifact both follow it."""
    if passed:
        return "verified"
    return IN_INT8_BUDGET if quantized and within_int8_budget(top1, reference_top1) else "below threshold"


def within_int8_budget(top1: float | None, reference_top1: float | None, budget_pt: float = INT8_BUDGET_PT) -> bool:
    return top1 is not None and reference_top1 is not None and top1 >= reference_top1 - budget_pt / 100


def fastest_verified(rows: list[BenchRow]) -> BenchRow | None:
    """The fastest artifact (p50) that passed verification in add_accuracy: float ones by their agreement
    threshold, int8 ones by their accuracy against their checkpoint on the same photos; None when none passed."""
    passing = [row for row in rows if row.latency_p50_ms is not None and row.status in SHIPPABLE]
    return min(passing, key=lambda row: row.latency_p50_ms) if passing else None


def markdown_table(rows: list[BenchRow]) -> str:
    lines = ["| artifact | format | status | MB | params M | threads | p50 ms | p90 ms | img/s (batch) | peak RSS MB | top-1 | agreement | ran as |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cell = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        status = r.status.replace("|", "/")[:120]
        throughput = "-" if r.throughput_img_s is None else f"{r.throughput_img_s:.1f} ({r.batch})"
        lines.append(f"| {Path(r.artifact).name} | {r.format} | {status} | {cell(r.file_mb, '.1f')} | "
                     f"{cell(r.params_m, '.2f')} | {cell(r.threads, 'd')} | {cell(r.latency_p50_ms, '.1f')} | "
                     f"{cell(r.latency_p90_ms, '.1f')} | {throughput} | "
                     f"{cell(r.peak_rss_mb, '.0f')} | {cell(r.top1, '.1%')} | {cell(r.agreement, '.1%')} | "
                     f"{r.runtime or '-'} |")
    return "\n".join(lines)


def write_results(rows: list[BenchRow], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps([r.to_dict() for r in rows], indent=1))
    (out / "bench.md").write_text(markdown_table(rows) + "\n")
