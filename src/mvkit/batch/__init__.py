"""Batch prediction over a photo library: `mvkit predict MODEL INPUT --out predictions.parquet`.

The job streams its input (mvkit.batch.inputs) in a fixed order, predicts in batches, and appends one row per photo
to a file that stays valid when it stops (mvkit.batch.outputs); a re-run with the same --out skips the rows
already written. Two engines, one row format:
- local: worker processes read and prepare the photos (Pillow + the artifact's Preprocess), this process runs
  the model; constant memory (the input is taken in windows).
- ray: the same work on Ray Data (`map_batches` with an actor pool; each actor loads the Predictor once), on a
  local Ray instance or an existing cluster (`--address`). The photos' paths must be readable from every node.
A photo that cannot be read becomes a row with its error, never a failed job.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from mvkit.batch.inputs import check_input, count_inputs, iter_inputs
from mvkit.batch.outputs import Resume, check_output, open_output
from mvkit.errors import MvkitError
from mvkit.files import one_writer
from mvkit.runtime.base import usable_cores

ENGINES = ("local", "ray")
RAY_WINDOW = 50_000  # paths per Ray dataset: bounds the driver's memory; actors reload once per window


@dataclass
class BatchSummary:
    out: Path
    written: int  # rows this run wrote
    skipped_done: int  # rows an earlier run had written
    errors: int  # rows of photos that could not be read (this run)


def predict_to_file(model: str | Path, source: str, out: Path, engine: str = "local", workers: int = 2,
                    batch_size: int = 32, topk: int = 5, address: str | None = None,
                    on_start: Callable[[int | None, int], None] | None = None,
                    on_progress: Callable[[int], None] | None = None) -> BatchSummary:
    """Predict every photo of `source` into `out`; see the module docstring. on_start(total, done) comes once
    the input is counted, on_progress(n) after each batch."""
    from mvkit.runtime import load_predictor

    out = Path(out)
    check_job(model, source, out, engine, workers, topk, address)
    out.parent.mkdir(parents=True, exist_ok=True)
    # two jobs appending to one file would write the same rows twice
    with one_writer(out.with_name(f".{out.name}.lock"), lambda holder: f"{out} is being written by another mvkit "
                    f"predict ({holder}); wait for it to finish (a re-run then resumes) or choose another --out"):
        return _predict_to_file(model, source, out, engine, workers, batch_size, topk, address, on_start, on_progress)


def _predict_to_file(model, source, out, engine, workers, batch_size, topk, address, on_start,
                     on_progress) -> BatchSummary:
    from mvkit.runtime import load_predictor

    topk = min(topk, _label_count(model))
    output = open_output(out, topk)
    resume = output.resume()
    paths = _skip_done(iter_inputs(source), resume, out)
    # loaded once here for the local engine and the resume check; Ray's actors load their own
    predictor = load_predictor(Path(model)) if engine == "local" or resume.last_row else None
    if resume.last_row:
        _check_same_model(predictor, resume.last_row, out, topk)
    total = count_inputs(source)
    if on_start:
        on_start(total, resume.done)
    rows = _local_rows(predictor, paths, workers, batch_size, topk) if engine == "local" else \
        _ray_rows(Path(model), paths, workers, batch_size, topk, address)
    written = errors = 0
    try:
        for chunk in _chunks(rows, batch_size):
            output.write(chunk)
            written += len(chunk)
            errors += sum(1 for row in chunk if row["error"])
            if on_progress:
                on_progress(len(chunk))
    except BaseException:
        output.close(finished=False)  # a valid partial file; a re-run resumes after its last row
        raise
    output.close(finished=True)
    return BatchSummary(out, written, resume.done, errors)


def check_job(model: str | Path, source: str, out: Path, engine: str, workers: int, topk: int,
              address: str | None = None) -> None:
    """Refuse a job that cannot run, before any work or file."""
    from mvkit.runtime import is_artifact

    if engine not in ENGINES:
        raise MvkitError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if address is not None and engine != "ray":
        raise MvkitError("--address names a Ray cluster: give it with --engine ray")
    if workers < 0 or (engine == "ray" and workers < 1):
        raise MvkitError("--workers must be at least 1 for Ray, 0 or more for the local engine")
    if not is_artifact(model):
        raise MvkitError(f"{model} is not an mvkit checkpoint or artifact: --out jobs run a saved file "
                         "(export or save the model first)")
    check_input(source)
    check_output(Path(out))
    if engine == "ray":
        from mvkit.errors import require_extra

        require_extra("ray", ("ray",), "--engine ray")
        if address is not None:
            _check_cluster_answers(address)


def _check_cluster_answers(address: str) -> None:
    """ray.init retries an address where nothing listens for minutes, the job showing 0 done: one TCP connect
    says it at once. `auto` (the cluster this machine joined) is left to Ray."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise MvkitError(f"--address {address}: give HOST:PORT (what `ray start --head` prints), ray://HOST:PORT or "
                         "auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise MvkitError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
                         "`ray start --head`, or leave --address out for a local Ray instance") from None


def _label_count(model: Path) -> int:
    from mvkit.artifact import Artifact

    return len(Artifact.load(Path(model)).labels)


def _skip_done(paths: Iterator[str], resume: Resume, out: Path) -> Iterator[str]:
    """`paths` after the rows already written, once the last of those is the row the file ends with."""
    if resume.done:
        before = next(itertools.islice(paths, resume.done - 1, None), None)  # consumed one by one, nothing kept
        last = resume.last_row["path"]
        if before is None:
            raise MvkitError(f"{out} was written for another input (it holds {resume.done} rows, the input has fewer "
                             "photos): use a new --out, or delete it to start again")
        if before != last:
            raise MvkitError(f"{out} was written for another input (its row {resume.done} is {last}, the input's is "
                             f"{before}): use a new --out, or delete it to start again")
    return paths


def _check_same_model(predictor, last_row: dict[str, Any], out: Path, topk: int) -> None:
    """Refuse to append to rows another model (or other weights, or another Preprocess) wrote: the file's last
    photo is predicted again and must get the numbers written for it. A row of an unreadable photo says nothing."""
    if last_row.get("error"):
        return
    array, error = read_photo(last_row["path"], predictor.preprocess)
    if error:
        return
    now = dict(zip(predictor.labels, predictor.check_classes(predictor.run(array[None]))[0]))
    for rank in range(1, topk + 1):
        label, probability = last_row[f"label_{rank}"], last_row[f"probability_{rank}"]
        # relative, as a small probability moves by little when the weights change; 1e-6 is the rows' rounding
        if label not in now or not math.isclose(now[label], probability, rel_tol=1e-3, abs_tol=1e-6):
            best = max(now, key=now.get)
            raise MvkitError(
                f"{out} was written by another model: its last photo ({Path(last_row['path']).name}) has "
                f"{last_row['label_1']} {last_row['probability_1']:.1%} there and {best} {now[best]:.1%} from "
                f"{predictor.artifact.path}; use a new --out, or delete it to start again")


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def make_row(path: str, probabilities: np.ndarray | None, labels: list[str], topk: int,
             error: str | None = None) -> dict[str, Any]:
    """One output row, with the numbers `mvkit predict` prints (predict.top_k); empty labels for an error row."""
    from mvkit.predict import top_k

    top = top_k(probabilities, labels, topk) if probabilities is not None else [(None, None)] * topk
    row: dict[str, Any] = {"path": path}
    for rank, (label, probability) in enumerate(top, start=1):
        row[f"label_{rank}"], row[f"probability_{rank}"] = label, probability
    row["error"] = error
    return row


# --- reading photos (in worker processes or Ray actors) --------------------------------------------------------

_preprocess = None


def _init_reader(preprocess: dict) -> None:
    global _preprocess
    from mvkit.preprocess import Preprocess

    _preprocess = Preprocess.from_dict(preprocess)


def read_photo(path: str, preprocess=None) -> tuple[np.ndarray | None, str | None]:
    """The photo prepared for the model by `preprocess` (the worker's, by default), or (None, why it cannot be
    read)."""
    from mvkit.data.images import BadImageError, download_photo, is_url, load_image

    try:
        photo = download_photo(path) if is_url(path) else load_image(path)
        return (preprocess or _preprocess).eval_array(photo), None
    except BadImageError as exc:
        return None, str(exc)
    except Exception as exc:  # a photo never fails the job
        return None, f"{type(exc).__name__}: {exc}"


def predict_read(predictor, paths: list[str], read: list[tuple[np.ndarray | None, str | None]], batch_size: int,
                 topk: int) -> list[dict[str, Any]]:
    """Rows for `paths` in order: the readable photos predicted in batches, the others with their error."""
    good = [i for i, (array, _) in enumerate(read) if array is not None]
    probabilities: dict[int, np.ndarray] = {}
    for start in range(0, len(good), batch_size):
        indices = good[start:start + batch_size]
        batch = predictor.check_classes(predictor.run(np.stack([read[i][0] for i in indices])))
        probabilities.update(zip(indices, batch))
    return [make_row(path, probabilities.get(i), predictor.labels, topk, read[i][1]) for i, path in enumerate(paths)]


# --- engines ---------------------------------------------------------------------------------------------------

def _local_rows(predictor, paths: Iterator[str], workers: int, batch_size: int,
                topk: int) -> Iterator[dict[str, Any]]:
    preprocess = predictor.preprocess.to_dict()
    window = batch_size * max(workers, 1) * 4
    if workers == 0:
        _init_reader(preprocess)
        for chunk in _chunks(paths, window):
            yield from predict_read(predictor, chunk, [read_photo(p) for p in chunk], batch_size, topk)
        return
    # spawn: forked children of a process that has started PyTorch's thread pools can hang in them
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_reader, initargs=(preprocess,)) as pool:
        pending = None
        for chunk in _chunks(paths, window):  # the next window is read while this one is predicted
            reading = pool.map_async(read_photo, chunk, chunksize=max(1, batch_size // 4))
            if pending:
                yield from predict_read(predictor, pending[0], pending[1].get(), batch_size, topk)
            pending = (chunk, reading)
        if pending:
            yield from predict_read(predictor, pending[0], pending[1].get(), batch_size, topk)


class RayPredictBatch:
    """A Ray Data actor: loads the Predictor once, then turns batches of paths into rows."""

    def __init__(self, model: str, topk: int, batch_size: int):
        from mvkit.runtime import load_predictor

        self.predictor = load_predictor(Path(model))
        self.topk, self.batch_size = topk, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        paths = [str(p) for p in batch["path"]]
        read = [read_photo(p, self.predictor.preprocess) for p in paths]
        rows = predict_read(self.predictor, paths, read, self.batch_size, self.topk)
        return {key: [row[key] for row in rows] for key in rows[0]}


def _ray_rows(model: Path, paths: Iterator[str], workers: int, batch_size: int, topk: int,
              address: str | None) -> Iterator[dict[str, Any]]:
    import logging

    import ray

    from mvkit.batch.outputs import columns

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 **({} if address else {"num_cpus": usable_cores()}))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows in input order: what resume relies on
    context.enable_progress_bars = False
    cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)) / workers) if not address else 1.0
    names = columns(topk)
    for window in _chunks(paths, RAY_WINDOW):
        dataset = ray.data.from_items([{"path": p} for p in window],
                                      override_num_blocks=max(1, min(len(window) // batch_size, workers * 8)))
        predicted = dataset.map_batches(
            RayPredictBatch, fn_constructor_kwargs={"model": str(Path(model).resolve()), "topk": topk,
                                                    "batch_size": batch_size},
            batch_size=batch_size, concurrency=workers, num_cpus=cpus, batch_format="numpy")
        for batch in predicted.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
            for row in batch.to_pylist():
                yield {name: row.get(name) for name in names}
