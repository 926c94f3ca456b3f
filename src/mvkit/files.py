"""Writing outputs so that a crash or a failed conversion never leaves half a file (or folder) behind."""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def remove(path: Path) -> None:
    """Delete a file or a folder (a .mlpackage) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yields a temporary path beside `target` (same last suffix: converters check it); when the block ends
    without an error it replaces `target`, else it is deleted. Works for files and folders."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}{target.suffix}")
    remove(partial)
    try:
        yield partial
        if not partial.exists():
            raise FileNotFoundError(f"{partial} was not written")
        if target.is_dir() and not target.is_symlink():
            if not partial.is_dir():  # a folder that was there is never swapped for a file: it would be lost
                from mvkit.errors import MvkitError

                raise MvkitError(f"{target} is a folder: give the name of the file to write")
            shutil.rmtree(target)
        os.replace(partial, target)
    finally:
        remove(partial)


def write_atomically(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file in the same folder, then rename."""
    with atomic_output(Path(path)) as partial:
        partial.write_bytes(data)


def check_writable(folder: Path) -> None:
    """Fail before any work when `folder` cannot take new files (read-only mount, no permission). Creates
    nothing that stays: a missing folder is checked through its nearest existing parent."""
    from mvkit.errors import MvkitError

    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise MvkitError(f"cannot write into {folder}: {probe_in} is not a folder")
    probe = probe_in / f".mvkit-write-check-{os.getpid()}"
    try:
        probe.touch()
    except OSError as exc:
        raise MvkitError(f"cannot write into {folder}: {exc.strerror or exc}; choose another --out") from None
    probe.unlink(missing_ok=True)


def check_file_out(path: Path, flag: str, example: str) -> None:
    """Fail before any work when the file `path` cannot be written: a folder there (replacing it would delete what
    it holds), or a folder above it that cannot take files. `example`: a file name to suggest inside the folder."""
    from mvkit.errors import MvkitError

    path = Path(path)
    if path.is_dir():
        raise MvkitError(f"{flag} {path} is a folder: give the name of the file to write, e.g. {path / example}")
    check_writable(path.parent)


@contextmanager
def one_writer(lock_path: Path, refusal: Callable[[str], str]) -> Iterator[None]:
    """An exclusive lock on `lock_path` while the block runs, so two processes never write the same output: a second
    one is refused at once with MvkitError(refusal("pid N of the holder")). The system releases a flock when its
    process ends, even on kill -9."""
    from mvkit.errors import MvkitError

    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise MvkitError(refusal(holder)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        Path(lock_path).unlink(missing_ok=True)  # removed while still held: a second writer fails fast, never waits
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
