"""How a training run meets the process around it: signals that stop it at a batch boundary, the lock that
keeps one writer per run folder, and global PyTorch settings given back as they were."""

from __future__ import annotations

import fcntl
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from mvkit.errors import MvkitError


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
    """One writer per run folder: a second `mvkit train` into the same --out is refused while the first runs.
    flock is released by the system when the process ends, even on kill -9."""
    if not main_process:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / ".lock"
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise MvkitError(f"{out} is in use by another mvkit train ({holder}); wait for it to finish or choose "
                         "another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # removed while still held: a second writer fails fast, never waits
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
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
