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


def _open_log(name: str):
    """The log file for `name`, emptied (it holds the last run's output); None where no cache folder is writable."""
    path = log_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", buffering=1)
    except OSError:
        return None


@contextmanager
def _descriptors_to(log) -> Iterator[None]:
    """File descriptors 1 and 2 point at `log` for the block: what C++ code and child processes print."""
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


@contextmanager
def native_output_to_log(what: str) -> Iterator[None]:
    """For the Python API: what C++ libraries print on file descriptors 1 and 2 during the block goes to the log
    file of `what` (ExecuTorch's cpuinfo lines when its first program loads). Shown when the "mvkit" logger is
    enabled for INFO (logging.basicConfig(level=logging.INFO), or the CLI's -v); a CLI command's own redirection
    already takes it."""
    log = None if _REDIRECTED or logging.getLogger("mvkit").isEnabledFor(logging.INFO) else _open_log(what)
    if log is None:  # shown, or no writable cache folder: shown rather than fail
        yield
        return
    with log, _descriptors_to(log):
        yield


@contextmanager
def third_party_to_log(consoles: list[Console], command: str, verbose: bool) -> Iterator[Path | None]:
    """Yields the log file's path (None with verbose: nothing is redirected)."""
    global _REDIRECTED
    log = None if verbose else _open_log(command)
    if log is None:  # verbose, or no writable cache folder: stay as we are rather than fail the command
        yield None
        return
    terminals = [os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8") for fd in (1, 2)]  # before the swap
    previous_files = [console.file for console in consoles]
    previous_streams = sys.stdout, sys.stderr
    for console in consoles:
        console.file = terminals[1] if console.stderr else terminals[0]
    with log, _descriptors_to(log):
        sys.stdout = sys.stderr = log
        _REDIRECTED = True
        try:
            yield Path(log.name)
        finally:
            _REDIRECTED = False
            log.flush()
            sys.stdout, sys.stderr = previous_streams
            for console, previous in zip(consoles, previous_files):
                console.file = previous
            for terminal in terminals:
                with contextlib.suppress(BrokenPipeError):  # the reader went away (mvkit ... | head)
                    terminal.close()
