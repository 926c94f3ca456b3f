"""Datasets: an image-folder tree, a CSV manifest, or the built-in demo set, always as a train/val pair.

Spec strings accepted everywhere (CLI and API):
  builtin:fashion        the committed Fashion-MNIST subset (6,000 train / 1,000 val)
  path/to/tree           one folder per class; split into train/val (stratified, seeded, saved to a file)
  path/to/tree           holding train/ and val/ (or valid/, validation/) folders of class folders
  path/to/manifest.csv   columns path,label[,split]; relative paths are relative to the CSV's folder
and an optional separate val tree.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from mvkit.data.images import (SizeSummary, find_copies, is_skipped_name, list_files, load_photo,
                               scan_images)
from mvkit.data.manifest import read_manifest
from mvkit.errors import MvkitError
from mvkit.files import write_atomically

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
VAL_FOLDER_NAMES = ("val", "valid", "validation")


class ImageFileDataset(torch.utils.data.Dataset):
    """Photos on disk with integer labels; yields (transform(image), label)."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform: Callable | None = None):
        self.samples = samples
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def name_of(self, index: int) -> str:
        return str(self.samples[index][0])

    def target(self, index: int) -> int:
        return self.samples[index][1]

    def image(self, index: int) -> Image.Image:
        return load_photo(self.samples[index][0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        return (self.transform(image) if self.transform else image), self.samples[index][1]


class ArrayImageDataset(torch.utils.data.Dataset):
    """Images held in memory as a uint8 array (N, H, W[, C]); used by the built-in demo set."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], name: str,
                 transform: Callable | None = None):
        self.images = images
        self.labels = labels.astype(np.int64)
        self.classes = classes
        self.name = name
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def name_of(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def target(self, index: int) -> int:
        return int(self.labels[index])

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        return (self.transform(image) if self.transform else image), int(self.labels[index])


@dataclass
class DataSplits:
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # bad files found by the scan
    split_file: Path | None = None
    pending_split: tuple | None = None  # a new split not written yet (load_data(write_split=False))
    photo_sizes: SizeSummary | None = None  # of every readable photo, train and val
    fingerprints: dict[Path, int] = field(default_factory=dict)  # difference hashes, with load_data(fingerprints=True)

    def save_split(self) -> None:
        if self.pending_split is not None:
            _write_split_file(*self.pending_split)
            self.pending_split = None

    def set_transforms(self, train: Callable | None, val: Callable | None) -> None:
        self.train.transform = train
        self.val.transform = val


def take_evenly(dataset: torch.utils.data.Dataset, count: int) -> torch.utils.data.Dataset:
    """A copy holding `count` items spread evenly over the dataset (every class keeps its share)."""
    if count >= len(dataset):
        return dataset
    picks = np.linspace(0, len(dataset) - 1, count).round().astype(int)
    if isinstance(dataset, ImageFileDataset):
        return ImageFileDataset([dataset.samples[i] for i in picks], dataset.classes, dataset.transform)
    return ArrayImageDataset(dataset.images[picks], dataset.labels[picks], dataset.classes, dataset.name,
                             dataset.transform)


def with_transform(dataset: torch.utils.data.Dataset, transform: Callable | None) -> torch.utils.data.Dataset:
    """A shallow copy of the dataset with another transform: the caller's dataset is left as it was."""
    view = copy.copy(dataset)
    view.transform = transform
    return view


def combined(first: torch.utils.data.Dataset, second: torch.utils.data.Dataset) -> torch.utils.data.Dataset:
    """Both parts of a split as one dataset of the same kind (e.g. to evaluate on all photos)."""
    if isinstance(first, ImageFileDataset):
        return ImageFileDataset(first.samples + second.samples, first.classes, first.transform)
    return ArrayImageDataset(np.concatenate([first.images, second.images]),
                             np.concatenate([first.labels, second.labels]), first.classes, first.name,
                             first.transform)


def class_histogram(dataset: torch.utils.data.Dataset) -> dict[str, int]:
    counts = np.bincount(np.asarray(dataset.targets, dtype=np.int64), minlength=len(dataset.classes))
    return {name: int(n) for name, n in zip(dataset.classes, counts)}


# ---- built-in demo set -------------------------------------------------------------------------------

BUILTIN_SETS = {"fashion": "fashion_mnist_subset.npz"}


def load_builtin(name: str) -> DataSplits:
    if name not in BUILTIN_SETS:
        raise MvkitError(f"unknown built-in dataset {name!r}; available: "
                         + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SETS))
    with resources.as_file(resources.files("mvkit.data.builtin") / BUILTIN_SETS[name]) as path:
        arrays = np.load(path)
        classes = [str(c) for c in arrays["classes"]]
        train = ArrayImageDataset(arrays["train_images"], arrays["train_labels"], classes, f"{name}/train")
        val = ArrayImageDataset(arrays["val_images"], arrays["val_labels"], classes, f"{name}/val")
        height, width = arrays["train_images"].shape[1:3]
    sizes = SizeSummary.of([(width, height)] * (len(train) + len(val)))  # every image has the array's size
    return DataSplits(train=train, val=val, classes=classes, photo_sizes=sizes)


# ---- folders and manifests ---------------------------------------------------------------------------

def _class_folders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not is_skipped_name(p.name))
    except PermissionError:
        raise MvkitError(f"cannot read the folder {root}: permission denied") from None


def _read_tree(root: Path, problems: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """(file, class name) for every file below each class folder of root; a class folder without files is
    reported (it would otherwise vanish from the classes)."""
    folders = _class_folders(root)
    if not folders:
        raise MvkitError(f"{root} holds no class folders; expected one folder of photos per class "
                         f"(e.g. {root}/cat/*.jpg, {root}/dog/*.jpg) or a CSV manifest")
    rows = []
    for folder in folders:
        files = list_files(folder, problems)
        if not files:
            log.warning("class folder %s holds no files: class %r is left out", folder, folder.name)
        rows += [(path, folder.name) for path in files]
    return rows


def stratified_split(labels: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of train and val: the same fraction of every class goes to val, chosen by a seeded shuffle."""
    if not 0.0 < val_fraction < 1.0:
        raise MvkitError(f"val fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for name in sorted(set(labels)):
        members = np.array([i for i, label in enumerate(labels) if label == name])
        rng.shuffle(members)
        # Every class with two or more photos gets at least one val and one train photo.
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction))) if len(members) > 1 else 0
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return sorted(train), sorted(val)


def _load_split_file(split_file: Path, root: Path) -> dict[str, list[Path]]:
    try:
        data = json.loads(split_file.read_text())
        return {part: [root / rel for rel in data[part]] for part in ("train", "val")}
    except (ValueError, KeyError, TypeError) as exc:
        raise MvkitError(f"split file {split_file} is damaged ({exc}); delete it to split again") from None


def _check_split_root(split_file: Path, root: Path) -> None:
    """A split file is for one dataset: refuse one written for another (e.g. a reused --out folder)."""
    try:
        recorded = json.loads(split_file.read_text()).get("root")
    except (ValueError, AttributeError):
        return  # _load_split_file reports the damage
    if recorded and Path(recorded) != root.resolve() and (Path(recorded) / ".").exists():
        raise MvkitError(f"split file {split_file} was made for {recorded}, not {root.resolve()}: use another "
                         "--out (or --split-file), or delete it to split this data anew")


def _relative_or_absolute(path: Path, root: Path) -> str:
    """Paths under root are stored relative to it (the data folder can move); others (a manifest's absolute
    paths) as they are."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path.resolve())


def _write_split_file(split_file: Path, root: Path, seed: int, val_fraction: float,
                      train: list[Path], val: list[Path]) -> None:
    # Atomic: processes of a distributed run may write and read it at the same moment.
    write_atomically(split_file, json.dumps({
        "root": str(root.resolve()), "seed": seed, "val_fraction": val_fraction,
        "train": [_relative_or_absolute(p, root) for p in train],
        "val": [_relative_or_absolute(p, root) for p in val],
    }, indent=1).encode())


def check_data_spec(spec: str | Path, what: str = "dataset") -> None:
    """The quick checks of a dataset spec (it names a built-in set, an existing folder or a CSV), so a command can
    refuse a wrong path before it converts or trains anything."""
    text = str(spec)
    if text.startswith(BUILTIN_PREFIX):
        if text[len(BUILTIN_PREFIX):] not in BUILTIN_SETS:
            raise MvkitError(f"{what}: unknown built-in dataset {text!r}; available: "
                             + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SETS))
        return
    path = Path(text)
    if not path.exists():
        raise MvkitError(f"{what} {path} does not exist (give a folder of class folders, a CSV manifest, "
                         f"or {BUILTIN_PREFIX}fashion)")
    if path.is_file() and path.suffix.lower() != ".csv":
        raise MvkitError(f"{what} {path} is a file but not a .csv manifest")


def load_data(
    spec: str | Path,
    val: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_file: Path | None = None,
    on_scan_progress: Callable[[int], None] | None = None,
    write_split: bool = True,
    fingerprints: bool = False,
    check_classes: Callable[[list[str]], Any] | None = None,
) -> DataSplits:
    """Resolve a dataset spec into train/val datasets whose items are (PIL RGB image, label) until a
    transform is set. Bad files are skipped and listed in `skipped`. A new split is written to `split_file`
    now, or with write_split=False when the caller calls DataSplits.save_split() (after its own checks). With
    `fingerprints`, each photo's difference hash is kept too (training looks for near-copies with them).
    `check_classes` sees the class names as soon as they are known, before the photos are decoded."""
    spec_text = str(spec)
    if spec_text.startswith(BUILTIN_PREFIX):
        splits = load_builtin(spec_text[len(BUILTIN_PREFIX):])
        if check_classes:
            check_classes(splits.classes)
        return splits

    check_data_spec(spec_text)
    path = Path(spec_text)

    if not 0.0 < val_fraction < 1.0:
        raise MvkitError(f"val fraction must be between 0 and 1, got {val_fraction}")
    if val is not None and not Path(val).is_dir():
        raise MvkitError(f"val folder {val} does not exist")
    unlisted: list[tuple[Path, str]] = []  # what list_files could not read
    # Gather (file, label, split or None) rows.
    if path.is_file():
        rows = read_manifest(path)
        root = path.parent
    else:
        root = path
        train_dir = path / "train"
        val_dir = next((path / n for n in VAL_FOLDER_NAMES if (path / n).is_dir()), None)
        if val is None and train_dir.is_dir() and val_dir is not None:
            rows = ([(p, c, "train") for p, c in _read_tree(train_dir, unlisted)]
                    + [(p, c, "val") for p, c in _read_tree(val_dir, unlisted)])
        else:
            rows = [(p, c, None) for p, c in _read_tree(path, unlisted)]
    if val is not None:
        rows = [(p, c, "train") for p, c, _ in rows] + [(p, c, "val") for p, c in _read_tree(Path(val), unlisted)]

    if check_classes:
        check_classes(sorted({label for _, label, _ in rows}))
    report = scan_images([p for p, _, _ in rows], on_progress=on_scan_progress, keep_copies=True,
                         fingerprints=fingerprints)
    report.bad = unlisted + report.bad
    good = set(report.good)
    listed_classes = sorted({label for _, label, _ in rows})
    rows = [row for row in rows if row[0] in good]
    classes = sorted({label for _, label, _ in rows})
    # a listed class whose every photo is missing or damaged would vanish from the model's labels without a word
    lost = [name for name in listed_classes if name not in classes]
    unread = f"; {len(report.bad)} listed file(s) could not be read, e.g. {report.bad[0][0]}: {report.bad[0][1]}" \
        if report.bad else ""
    if not rows:
        raise MvkitError(f"no readable photos in {path}{unread}")
    if len(classes) < 2:
        what = f"readable photos of one class only ({classes[0]!r}; none of {', '.join(lost)})" if lost else \
            f"one class ({classes[0]!r})"
        raise MvkitError(f"{path} holds {what}: a classifier needs photos of at least two classes{unread}")
    if lost:
        log.warning("no photo of class %s could be read, so it is left out%s", ", ".join(lost), unread)
    index = {name: i for i, name in enumerate(classes)}
    pending_split = None

    if any(split is not None for _, _, split in rows):
        train_rows = [(p, index[c]) for p, c, s in rows if s != "val"]
        val_rows = [(p, index[c]) for p, c, s in rows if s == "val"]
        if not val_rows:
            raise MvkitError(f"{path} marks no photo as val: give some rows split=val, or leave the split column "
                             "empty to let mvkit split")
    else:
        label_of = {p: c for p, c, _ in rows}
        if split_file is not None and Path(split_file).exists():
            _check_split_root(Path(split_file), root)
            parts = _load_split_file(Path(split_file), root)
            train_files = [p for p in parts["train"] if p in label_of]
            val_files = [p for p in parts["val"] if p in label_of]
            unlisted = len(label_of) - len(train_files) - len(val_files)
            if unlisted:
                log.warning("%d photo(s) are not in split file %s and are left out: it keeps the split of the run "
                            "that wrote it; delete it to split the data anew", unlisted, split_file)
            unreadable = {p for p, _ in report.bad}
            gone = [p for p in parts["train"] + parts["val"] if p not in label_of and p not in unreadable]
            if gone:  # a resumed run's batches change with the training set: say so rather than drop them quietly
                log.warning("%d photo(s) of split file %s are no longer in %s (e.g. %s): train and val go on "
                            "without them", len(gone), split_file, path, _relative_or_absolute(gone[0], root))
        else:
            files = [p for p, _, _ in rows]
            train_idx, val_idx = stratified_split([c for _, c, _ in rows], val_fraction, seed)
            train_files, val_files = [files[i] for i in train_idx], [files[i] for i in val_idx]
            if split_file is not None:
                pending_split = (Path(split_file), root, seed, val_fraction, train_files, val_files)
                if write_split:
                    _write_split_file(*pending_split)
                    pending_split = None
        train_rows = [(p, index[label_of[p]]) for p in train_files]
        val_rows = [(p, index[label_of[p]]) for p in val_files]

    return DataSplits(
        train=ImageFileDataset(train_rows, classes),
        val=ImageFileDataset(val_rows, classes),
        classes=classes,
        skipped=report.bad,
        split_file=Path(split_file) if split_file else None,
        pending_split=pending_split,
        photo_sizes=SizeSummary.of(report.sizes),
        fingerprints=report.fingerprints,
    )


def with_likely_name(name: str, known: list[str], holder: str) -> str:
    """A class name that `holder` does not know, with the known one it was likely meant to be (`tulips` beside
    `tulip`), as error messages name it."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name} ({holder} has {close[0]!r}: a misnamed folder?)" if close else name


def check_for_training(data: DataSplits) -> None:
    """Before training: a class with val photos but no training photo is a mistake (often a folder named
    differently in val/, e.g. `tulips` beside train's `tulip`); one without val photos is only unmeasured.
    (Eval and verify take val-only data: a trained model needs no training photos.)"""
    trained = {data.classes[i] for i in data.train.targets}
    measured = {data.classes[i] for i in data.val.targets}
    unsplit = [name for name in data.classes if name not in trained | measured]
    if unsplit:  # photos found now, but a saved split from before they were added leaves them out
        raise MvkitError(f"no photo of class(es) {', '.join(unsplit)} is in the saved split {data.split_file}, which "
                         "was made before they were added: delete that file to split again, or train into a new --out")
    untrained = [name for name in data.classes if name not in trained]
    if untrained:
        named = [with_likely_name(name, sorted(trained), "train") for name in untrained]
        raise MvkitError(f"val holds class(es) with no training photo: {', '.join(named)}. A model cannot learn "
                         "them: rename the folders or give them training photos")
    if isinstance(data.train, ImageFileDataset):  # e.g. --val naming the training folder itself
        in_train = {path.resolve() for path, _ in data.train.samples}
        shared = [path for path, _ in data.val.samples if path.resolve() in in_train]
        if shared:
            raise MvkitError(f"{len(shared)} of the {len(data.val)} val photos are training photos themselves (e.g. "
                             f"{shared[0]}): val must be photos kept out of training; give --val a folder of others")
    unmeasured = [name for name in data.classes if name not in measured]
    if unmeasured:
        log.warning("no val photo of %s: %s accuracy is not measured", ", ".join(unmeasured),
                    "its" if len(unmeasured) == 1 else "their")
    _warn_about_duplicates(data)


def _warn_about_duplicates(data: DataSplits) -> None:
    """Copies of one photo: in both train and val they are no test; under two classes one label is wrong. Byte-
    identical copies are found by reading equal-sized files again, near-copies (resized, re-saved, recoloured) by
    the difference hashes of the scan, when it kept them (load_data(fingerprints=True), as training does)."""
    if not isinstance(data.train, ImageFileDataset):  # the built-in set: arrays, not files
        return
    label_of = {path: data.classes[label] for path, label in data.train.samples + data.val.samples}
    identical, near = find_copies(label_of, data.fingerprints)
    in_val = {path for path, _ in data.val.samples}

    def example(group: list[Path]) -> str:
        return " = ".join(f"{p.parent.name}/{p.name}" for p in group)

    for groups, copies, more in ((identical, "byte-identical copies", ""),
                                 (near, "near-identical copies (resized, re-saved or recoloured)",
                                  "; `mvkit scan` lists them all")):
        leaked = [group for group in groups if {p in in_val for p in group} == {True, False}]
        conflicting = [group for group in groups if len({label_of[p] for p in group}) > 1]
        if leaked:
            _warn_once(f"{len(leaked)} photo(s) in val are {copies} of training photos, so val has seen them (e.g. "
                       f"{example(leaked[0])}): delete the copies{more}", leaked[0])
        if conflicting:
            _warn_once(f"{len(conflicting)} photo(s) are filed under two classes as {copies}, so one label is wrong "
                       f"(e.g. {example(conflicting[0])})", conflicting[0])


_warned: set[tuple[str, tuple[Path, ...]]] = set()


def _warn_once(message: str, photos: list[Path]) -> None:
    """A warning about these photos, said once a process: `mvkit compare` loads the same data for every model."""
    key = (message, tuple(photos))
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def split_record(spec: str, val_fraction: float, seed: int, split_file: Path | None,
                 val: str | Path | None = None) -> dict[str, Any]:
    """What a checkpoint's sidecar keeps of the split it was trained on (see load_data_as_trained); `val`: the
    separate val folder it was trained with, if any."""
    return {"data": _recorded_data(spec), "val_fraction": val_fraction, "seed": seed,
            "split_file": str(Path(split_file).resolve()) if split_file else None,
            "val": str(Path(val).resolve()) if val else None}


def _recorded_data(spec: str | Path) -> str:
    """A data spec as a split record names it: a built-in set by name, a folder or manifest by its absolute path."""
    text = str(spec)
    return text if text.startswith(BUILTIN_PREFIX) else str(Path(text).resolve())


def recorded_data(artifact) -> str | None:
    """The data the artifact's source checkpoint was trained on, as its split record names it (or None)."""
    return (artifact.extra.get("split") or {}).get("data")


def trained_on(spec: str, artifact) -> bool:
    """Whether the artifact's source checkpoint recorded its split of `spec` (it was trained on this data)."""
    return recorded_data(artifact) == _recorded_data(spec)


def load_data_as_trained(spec: str, artifact, decoded: dict | None = None,
                         on_scan_progress: Callable[[int], None] | None = None,
                         check_classes: Callable[[list[str]], Any] | None = None) -> DataSplits:
    """`spec` split as the artifact's source checkpoint was trained on it, when the checkpoint recorded its split
    (otherwise the default split): so "val" never holds photos the model was trained on. `decoded`: a dict
    kept by the caller across calls, so each distinct split is decoded once."""
    record = artifact.extra.get("split") or {}
    text = str(spec)
    same = trained_on(spec, artifact)
    split_file = record.get("split_file") if same else None
    val = record.get("val") if same else None
    if val and not Path(val).is_dir():
        log.warning("%s was trained with the val folder %s, which is gone: its val photos are a default split of %s "
                    "now, which it trained on", artifact.path.name, val, spec)
        val = None
    options = {"val_fraction": record.get("val_fraction", 0.2) if same else 0.2,
               "seed": record.get("seed", 0) if same else 0,
               "split_file": Path(split_file) if split_file and Path(split_file).exists() else None, "val": val}
    key = (text, options["val_fraction"], options["seed"], str(options["split_file"]), val)
    if decoded is not None and key in decoded:
        return decoded[key]
    splits = load_data(spec, on_scan_progress=on_scan_progress, check_classes=check_classes, **options)
    if decoded is not None:
        decoded[key] = splits
    return splits
