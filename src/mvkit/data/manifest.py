"""A CSV manifest of labelled photos (path,label[,split]). Apart from the datasets, which need torch, so that
`mvkit scan` of a manifest imports none."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from mvkit.errors import MvkitError

log = logging.getLogger(__name__)

# split values a manifest may use, case-insensitive
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}


def read_manifest(csv_path: Path) -> list[tuple[Path, str, str | None]]:
    """Rows of a path,label[,split] CSV; relative paths are relative to the CSV's folder. Refuses empty labels,
    unknown split values and a path listed with two labels; drops exact duplicate rows (they would leak one
    photo into both train and val) with a warning."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [name.strip() for name in reader.fieldnames or []]
            if not {"path", "label"} <= set(fields):
                raise MvkitError(f"{csv_path}: a manifest needs a header with columns path,label[,split]; "
                                 f"found {reader.fieldnames}")
            reader.fieldnames = fields
            raw = list(reader)
    except UnicodeDecodeError as exc:
        raise MvkitError(f"{csv_path} is not a UTF-8 text CSV ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise MvkitError(f"{csv_path} is not a readable CSV: {exc}") from None
    rows, label_of, duplicates = [], {}, 0
    for line, row in enumerate(raw, start=2):
        text, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not text:
            raise MvkitError(f"{csv_path}, line {line}: empty path")
        if not label:
            raise MvkitError(f"{csv_path}, line {line}: {text} has an empty label")
        split_text = (row.get("split") or "").strip()
        split = SPLIT_NAMES.get(split_text.lower()) if split_text else None
        if split_text and split is None:
            raise MvkitError(f"{csv_path}, line {line}: split {split_text!r} is not train or val (also accepted: "
                             "training, valid, validation; leave it empty to let mvkit split)")
        path = Path(text)
        path = path if path.is_absolute() else csv_path.parent / path
        try:
            key = str(path.resolve())
        except (ValueError, OSError) as exc:  # a NUL byte, a name too long
            raise MvkitError(f"{csv_path}, line {line}: {text!r} is not a usable path ({exc})") from None
        if key in label_of:
            if label_of[key] != (label, split):
                raise MvkitError(f"{csv_path}, line {line}: {text} is listed twice, as {label_of[key][0]!r} "
                                 f"({label_of[key][1] or 'no split'}) and {label!r} ({split or 'no split'}); "
                                 "keep one row per photo")
            duplicates += 1
            continue
        label_of[key] = (label, split)
        rows.append((path, label, split))
    if duplicates:
        log.warning("%s: %d duplicate rows left out (each photo is used once)", csv_path, duplicates)
    if not rows:
        raise MvkitError(f"{csv_path} lists no photos")
    return rows
