"""The photos of a batch job, streamed in a fixed order (so a re-run can skip what is done): a folder tree, a glob,
a CSV manifest (a `path` column, else the first), or a text file of paths, one per line. A manifest may name http(s)
URLs; its relative paths are relative to its folder, as in training manifests (mvkit.data.datasets). Nothing is
listed whole: a folder is walked one directory at a time, sorted within it."""

from __future__ import annotations

import csv
import glob
import os
from pathlib import Path
from typing import Iterator

from mvkit.data.images import IMAGE_EXTENSIONS, is_skipped_name, is_url
from mvkit.errors import MvkitError

MANIFEST_SUFFIXES = {".csv", ".txt", ".lst"}


def check_input(spec: str) -> None:
    """Refuse an input that cannot be read before any work starts."""
    path = Path(spec)
    if glob.has_magic(spec):
        return
    if not path.exists():
        raise MvkitError(f"{spec} does not exist (give a folder, a glob in quotes, a .csv manifest or a .txt list)")
    if path.is_file() and path.suffix.lower() not in MANIFEST_SUFFIXES | IMAGE_EXTENSIONS:
        raise MvkitError(f"{spec}: a file input must be a .csv manifest, a .txt list of paths or a photo")


def iter_inputs(spec: str) -> Iterator[str]:
    """Every photo path of `spec`, in the same order each time the input is unchanged."""
    path = Path(spec)
    if glob.has_magic(spec):
        # glob.iglob streams in directory order, the same on each run while the folders are unchanged
        yield from (found for found in glob.iglob(spec, recursive=True)
                    if Path(found).suffix.lower() in IMAGE_EXTENSIONS)
    elif path.is_dir():
        yield from _walk(path)
    elif path.suffix.lower() == ".csv":
        yield from (_from_manifest(path, found) for found in _csv_paths(path))
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        with path.open(encoding="utf-8-sig") as lines:
            yield from (_from_manifest(path, line.rstrip("\r\n")) for line in lines if line.strip())
    else:
        yield str(path)


def _walk(folder: Path) -> Iterator[str]:
    """Depth first, names sorted within each directory; hidden and system entries skipped."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if is_skipped_name(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            yield entry.path


def _from_manifest(manifest: Path, path: str) -> str:
    return path if os.path.isabs(path) or is_url(path) else os.path.join(manifest.parent, path)


def _csv_paths(manifest: Path) -> Iterator[str]:
    with manifest.open(newline="", encoding="utf-8-sig") as rows:
        reader = csv.reader(rows)
        header = next(reader, None)
        if header is None:
            return
        column = header.index("path") if "path" in header else 0
        if "path" not in header and Path(header[0]).suffix.lower() in IMAGE_EXTENSIONS:
            yield header[0]  # no header row: the first line is a photo
        for row in reader:
            if row and row[column].strip():
                yield row[column]


def count_inputs(spec: str) -> int:
    """How many photos `spec` names (one pass, nothing kept): the progress bar's total."""
    return sum(1 for _ in iter_inputs(spec))
