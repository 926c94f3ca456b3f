"""How a training run meets the process around it: signals that stop it at a batch boundary, the lock that
keeps one writer per run folder, and global PyTorch settings given back as they were."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from mvkit.files import one_writer


class StopRequest:
    """Ctrl-C (SIGINT) and `kill` (SIGTERM) during training ask the run to stop at the next batch boundary, where
    model, optimizer, schedule and RNG states belong together, so a resumed run is exactly the uninterrupted one.
    A signal landing mid-batch and saved there would keep RNG states that the unfinished batch had drawn from.
    A second signal, or one outside the training loop, stops at once (KeyboardInterrupt). kill -9 cannot be
    caught: the state saved last (each epoch, or every --save-every-steps) is what resumes."""

    def __init__(self):
        self.signal_name: str | None = None
        self.armed = False  # True while a stop can wait for the batch boundary

    def _handle(self, number, frame) -> None:
        if not self.armed or self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        try:
            previous = {number: signal.signal(number, self._handle) for number in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


@contextmanager
def run_folder_lock(out: Path, main_process: bool) -> Iterator[None]:
    """One writer per run folder: a second `mvkit train` into the same --out is refused while the first runs."""
    if not main_process:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with one_writer(out / ".lock", lambda holder: f"{out} is in use by another mvkit train ({holder}); wait for "
                        "it to finish or choose another --out"):
            yield
    finally:
        if created and not any(out.iterdir()):  # a run that failed its checks leaves no folder
            out.rmdir()


@contextmanager
def deterministic_algorithms(on: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the run, then as the caller had it."""
    before = torch.are_deterministic_algorithms_enabled()
    if on:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
