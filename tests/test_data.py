import json
import shutil
from collections import Counter

import numpy as np
import pytest

from mvkit.data import class_histogram, load_data
from mvkit.errors import MvkitError


def test_builtin_fashion_is_balanced_and_loads_as_rgb():
    data = load_data("builtin:fashion")
    assert len(data.train) == 6000 and len(data.val) == 1000
    assert data.classes[0] == "tshirt_top" and len(data.classes) == 10
    assert set(class_histogram(data.train).values()) == {600}
    assert set(class_histogram(data.val).values()) == {100}
    image, label = data.train[0]
    assert image.mode == "RGB" and image.size == (28, 28) and 0 <= label < 10
    assert np.asarray(image).std() > 10  # a real garment, not a blank array


def test_unknown_builtin_and_missing_paths_give_clear_errors(tmp_path):
    with pytest.raises(MvkitError, match="builtin:fashion"):
        load_data("builtin:nope")
    with pytest.raises(MvkitError, match="does not exist"):
        load_data(tmp_path / "missing")
    with pytest.raises(MvkitError, match="class folders"):
        load_data(tmp_path)


def test_folder_split_is_stratified_seeded_and_saved(flowers_subset, tmp_path):
    split_file = tmp_path / "split.json"
    data = load_data(flowers_subset, val_fraction=0.25, seed=7, split_file=split_file)
    assert data.classes == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert Counter(data.val.targets) == {i: 4 for i in range(5)}  # 25% of 16 per class
    assert Counter(data.train.targets) == {i: 12 for i in range(5)}
    assert not set(data.train.samples) & set(data.val.samples)
    saved = json.loads(split_file.read_text())
    assert saved["seed"] == 7 and len(saved["val"]) == 20

    same = load_data(flowers_subset, val_fraction=0.25, seed=7)
    assert same.val.samples == data.val.samples
    other_seed = load_data(flowers_subset, val_fraction=0.25, seed=8)
    assert other_seed.val.samples != data.val.samples
    # The split file wins over seed and fraction: runs reuse exactly the same split.
    reused = load_data(flowers_subset, val_fraction=0.5, seed=99, split_file=split_file)
    assert reused.val.samples == data.val.samples


def test_corrupt_files_in_a_tree_are_skipped_and_reported(flowers_subset, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(flowers_subset, root)
    (root / "rose" / "broken.jpg").write_bytes((root / "rose").iterdir().__next__().read_bytes()[:300])
    (root / "tulip" / "readme.txt").write_text("notes")
    data = load_data(root)
    assert sorted(p.name for p, _ in data.skipped) == ["broken.jpg", "readme.txt"]
    assert len(data.train) + len(data.val) == 80


def test_train_val_folders_and_separate_val_tree(flowers_subset, tmp_path):
    root = tmp_path / "split_tree"
    for part, members in (("train", slice(0, 12)), ("val", slice(12, 16))):
        for class_dir in sorted(flowers_subset.iterdir()):
            (root / part / class_dir.name).mkdir(parents=True)
            for photo in sorted(class_dir.iterdir())[members]:
                shutil.copy(photo, root / part / class_dir.name / photo.name)
    data = load_data(root)
    assert len(data.train) == 60 and len(data.val) == 20
    separate = load_data(root / "train", val=root / "val")
    assert len(separate.train) == 60 and len(separate.val) == 20
    image, label = separate.val[0]
    assert image.size == (128, 128) and separate.classes[label] == "daisy"


def test_csv_manifest_with_and_without_split_column(flowers_subset, tmp_path):
    photos = sorted(flowers_subset.rglob("*.jpg"))
    with_split = tmp_path / "with_split.csv"
    with_split.write_text("path,label,split\n" + "".join(
        f"{p},{p.parent.name},{'val' if i % 4 == 0 else 'train'}\n" for i, p in enumerate(photos)))
    data = load_data(with_split)
    assert len(data.val) == 20 and len(data.train) == 60
    assert data.classes == sorted({p.parent.name for p in photos})

    relative = flowers_subset / "manifest.csv"
    relative.write_text("path,label\n" + "".join(f"{p.relative_to(flowers_subset)},{p.parent.name}\n" for p in photos))
    try:
        data = load_data(relative, val_fraction=0.25)
        assert Counter(data.val.targets) == {i: 4 for i in range(5)}
    finally:
        relative.unlink()

    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.jpg,cat\n")
    with pytest.raises(MvkitError, match="path,label"):
        load_data(bad)
