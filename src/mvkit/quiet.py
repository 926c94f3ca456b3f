"""Quiet output: while a command runs, third-party libraries' prints, warnings, logs and progress bars go to a
log file, and the terminal shows mvkit's own lines only (`-v` shows everything).

Converters print from C++ (ExecuTorch's cpuinfo lines), from Python (ONNX Runtime's calibration) and through
tqdm (coremltools), so the redirection is done on the process's file descriptors 1 and 2, not only on
sys.stdout/sys.stderr; mvkit's consoles write to duplicates of the original descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.logging import RichHandler


def log_path(command: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mvkit" / "logs"
    return base / f"{command or 'mvkit'}.log"


def route_logging(console: Console, verbose: bool, library_handler: logging.Handler | None) -> None:
    """mvkit's own warnings to the console; other libraries' records to `library_handler` (or the console
    with -v)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    rich = RichHandler(console=console, show_path=False, show_time=False)
    mvkit_logger = logging.getLogger("mvkit")
    mvkit_logger.handlers = [rich]
    mvkit_logger.propagate = False
    mvkit_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    root.addHandler(rich if verbose or library_handler is None else library_handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(not verbose)


_REDIRECTED = False  # third_party_to_log is in force (a CLI command): its log takes native output already


@contextmanager
def native_output_to_log(what: str) -> Iterator[None]:
    """For the Python API: what C++ libraries print on file descriptors 1 and 2 during the block goes to the log
    file of `what` (ExecuTorch's cpuinfo lines when its first program loads). Shown when the "mvkit" logger is
    enabled for INFO (logging.basicConfig(level=logging.INFO), or the CLI's -v); a CLI command's own redirection
    already takes it."""
    if _REDIRECTED or logging.getLogger("mvkit").isEnabledFor(logging.INFO):
        yield
        return
    try:
        path = log_path(what)
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "w", buffering=1)  # the last time's output, as a command's log holds its last run
    except OSError:  # no writable cache folder: show it rather than fail
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        log.close()


@contextmanager
def third_party_to_log(consoles: list[Console], command: str, verbose: bool) -> Iterator[Path | None]:
    """Yields the log file's path (None with verbose: nothing is redirected)."""
    global _REDIRECTED
    if verbose:
        yield None
        return
    path = log_path(command)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "w", buffering=1)
    except OSError:  # no writable cache folder: stay as we are rather than fail the command
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminals = [os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8") for fd in (1, 2)]
    previous_files = [console.file for console in consoles]
    previous_streams = sys.stdout, sys.stderr
    for console in consoles:
        console.file = terminals[1] if console.stderr else terminals[0]
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    _REDIRECTED = True
    try:
        yield path
    finally:
        _REDIRECTED = False
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = previous_streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for console, previous in zip(consoles, previous_files):
            console.file = previous
        for terminal in terminals:
            with contextlib.suppress(BrokenPipeError):  # the reader went away (mvkit ... | head)
                terminal.close()
        log.close()
