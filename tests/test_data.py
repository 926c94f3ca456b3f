import json
import shutil
from pathlib import Path
from collections import Counter

import numpy as np
import pytest

from mvkit.data import class_histogram, load_data
from mvkit.data.datasets import check_for_training
from mvkit.data.images import find_duplicates
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


def test_a_saved_split_names_photos_gone_since_and_new_ones_left_out(flowers_subset, tmp_path, caplog):
    """A resumed or repeated run reuses split.json: a photo deleted since is said, not dropped quietly (a resumed
    run's batches change with it), and a new photo is left out with the way to include it."""
    root = tmp_path / "tree"
    shutil.copytree(flowers_subset, root)
    split_file = tmp_path / "split.json"
    first = load_data(root, val_fraction=0.25, seed=7, split_file=split_file)
    gone_train, gone_val = first.train.samples[0][0], first.val.samples[0][0]
    gone_train.unlink()
    gone_val.unlink()
    shutil.copy(first.train.samples[1][0], root / "rose" / "new.jpg")
    with caplog.at_level("WARNING"):
        again = load_data(root, split_file=split_file)
    assert "2 photo(s) of split file" in caplog.text and "are no longer in" in caplog.text
    assert "1 photo(s) are not in split file" in caplog.text and "delete it to split the data anew" in caplog.text
    assert len(again.train) == len(first.train) - 1 and len(again.val) == len(first.val) - 1
    assert root / "rose" / "new.jpg" not in {p for p, _ in again.train.samples + again.val.samples}
    assert not again.skipped  # gone is not unreadable


def test_a_class_whose_every_photo_is_unreadable_is_named_not_dropped_quietly(flowers_subset, tmp_path, caplog):
    root = tmp_path / "tree"
    shutil.copytree(flowers_subset, root)
    for photo in (root / "tulip").iterdir():
        photo.write_bytes(photo.read_bytes()[:200])  # cut off, as a failed copy leaves them
    with caplog.at_level("WARNING"):
        data = load_data(root)
    assert "tulip" not in data.classes and len(data.classes) == 4
    assert "no photo of class tulip could be read, so it is left out" in caplog.text


def test_val_that_holds_the_training_photos_themselves_is_refused_for_training(flowers_subset, tmp_path):
    """`--val` naming the training folder (here by another spelling of its path) trained and reported a val
    accuracy measured on the training photos, without a word."""
    data = load_data(flowers_subset, val=flowers_subset / "daisy" / "..")
    with pytest.raises(MvkitError, match=r"80 of the 80 val photos are training photos themselves"):
        check_for_training(data)


def test_corrupt_files_in_a_tree_are_skipped_and_reported(flowers_subset, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(flowers_subset, root)
    (root / "rose" / "broken.jpg").write_bytes((root / "rose").iterdir().__next__().read_bytes()[:300])
    (root / "tulip" / "readme.txt").write_text("notes")
    data = load_data(root)
    assert sorted(p.name for p, _ in data.skipped) == ["broken.jpg", "readme.txt"]
    assert len(data.train) + len(data.val) == 80


def test_system_folders_of_macos_zips_and_nas_boxes_are_neither_classes_nor_photos(flowers_subset, tmp_path, caplog):
    from mvkit.batch.inputs import iter_inputs

    root = tmp_path / "unzipped"
    shutil.copytree(flowers_subset, root)
    a_rose = next((root / "rose").iterdir())
    (root / "__MACOSX" / "rose").mkdir(parents=True)  # what macOS's Compress puts in a zip
    (root / "__MACOSX" / "rose" / f"._{a_rose.name}").write_bytes(b"\x00\x05\x16\x07 resource fork")
    thumbs = root / "rose" / "@eaDir" / a_rose.name  # a Synology NAS's thumbnails: real JPEGs of the photos
    thumbs.mkdir(parents=True)
    shutil.copy(a_rose, thumbs / "SYNOPHOTO_THUMB_M.jpg")
    (root / "tulip" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 windows thumbnail cache")
    data = load_data(root)
    assert data.classes == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert len(data.train) + len(data.val) == 80 and data.skipped == []
    assert "__MACOSX" not in caplog.text
    assert not [p for p in iter_inputs(str(root)) if "@eaDir" in p or "__MACOSX" in p]


def split_tree(flowers: Path, root: Path) -> Path:
    """train/ and val/ folders of the same classes: 12 and 4 photos of each."""
    for part, members in (("train", slice(0, 12)), ("val", slice(12, 16))):
        for class_dir in sorted(flowers.iterdir()):
            (root / part / class_dir.name).mkdir(parents=True)
            for photo in sorted(class_dir.iterdir())[members]:
                shutil.copy(photo, root / part / class_dir.name / photo.name)
    return root


def test_train_val_folders_and_separate_val_tree(flowers_subset, tmp_path):
    root = split_tree(flowers_subset, tmp_path / "split_tree")
    data = load_data(root)
    assert len(data.train) == 60 and len(data.val) == 20
    separate = load_data(root / "train", val=root / "val")
    assert len(separate.train) == 60 and len(separate.val) == 20
    image, label = separate.val[0]
    assert image.size == (128, 128) and separate.classes[label] == "daisy"


def test_a_val_class_without_training_photos_is_refused_for_training_and_named(flowers_subset, tmp_path, caplog):
    root = split_tree(flowers_subset, tmp_path / "split_tree")
    (root / "val" / "tulip").rename(root / "val" / "tulips")  # a misnamed folder
    data = load_data(root)  # eval and verify take it: a trained model needs no training photos
    with pytest.raises(MvkitError, match=r"no training photo: tulips \(train has 'tulip': a misnamed folder\?\)"):
        check_for_training(data)
    shutil.rmtree(root / "val" / "tulips")  # a class with no val photo is only unmeasured
    data = load_data(root)
    check_for_training(data)
    assert len(data.classes) == 5 and len(data.val) == 16 and "no val photo of tulip" in caplog.text


def test_a_class_added_after_the_saved_split_is_named_before_training(flowers_subset, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(flowers_subset, root)
    split_file = tmp_path / "run" / "split.json"
    split_file.parent.mkdir()
    check_for_training(load_data(root, split_file=split_file))  # a first run saves its split
    shutil.copytree(root / "tulip", root / "orchid")  # then a class is added
    with pytest.raises(MvkitError, match=r"no photo of class\(es\) orchid is in the saved split .*split.json"):
        check_for_training(load_data(root, split_file=split_file))


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


def test_a_manifest_of_absolute_paths_without_split_is_split_and_saved(flowers_subset, tmp_path):
    """The most common manifest form: absolute paths, no split column. The split file keeps them as they are."""
    rows = [f"{p},{folder.name}" for folder in sorted(flowers_subset.iterdir()) for p in sorted(folder.glob("*.jpg"))]
    manifest = tmp_path / "elsewhere" / "photos.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    split_file = tmp_path / "split.json"
    first = load_data(manifest, split_file=split_file)
    assert len(first.train) == 65 and len(first.val) == 15  # 3 of 16 per class
    saved = json.loads(split_file.read_text())
    assert all(path.startswith(str(flowers_subset.resolve())) for path in saved["val"])
    again = load_data(manifest, split_file=split_file, seed=99)  # the saved split wins over a new seed
    assert again.val.samples == first.val.samples


def test_scan_of_a_folder_or_a_manifest_imports_no_torch(flowers_subset, tmp_path):
    """scan read CSV manifests with the datasets module, which imports torch (2 s of every scan), though it trains
    nothing."""
    from conftest import assert_runs_without

    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label\n" + "\n".join(f"{p},{p.parent.name}" for p in sorted(flowers_subset.rglob("*.jpg"))[:6]))
    for data in (flowers_subset, manifest):
        assert_runs_without(["scan", str(data)], ("torch", "timm"))


def test_duplicate_manifest_rows_are_used_once(flowers_subset, tmp_path, caplog):
    rows = [f"{p},{folder.name}" for folder in sorted(flowers_subset.iterdir()) for p in sorted(folder.glob("*.jpg"))]
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label\n" + "\n".join(rows + rows[:5]) + "\n")
    data = load_data(manifest)
    assert len(data.train) + len(data.val) == 80
    assert not set(data.train.samples) & set(data.val.samples)
    assert "5 duplicate rows" in caplog.text


def test_split_values_are_case_insensitive_synonyms(flowers_subset, tmp_path):
    rows = [f"{p},{folder.name},{'Validation' if i % 4 == 0 else 'TRAIN'}"
            for folder in sorted(flowers_subset.iterdir()) for i, p in enumerate(sorted(folder.glob("*.jpg")))]
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    data = load_data(manifest)
    assert (len(data.train), len(data.val)) == (60, 20)


def test_identical_copies_are_found_and_named_when_they_leak_into_val_or_carry_two_labels(flowers_subset, tmp_path,
                                                                                          caplog):
    from typer.testing import CliRunner

    from mvkit.cli import app

    root = split_tree(flowers_subset, tmp_path / "split_tree")
    a_rose = sorted((root / "train" / "rose").iterdir())[0]
    shutil.copy(a_rose, root / "val" / "rose" / "copy_of_a_rose.jpg")  # a training photo again in val
    shutil.copy(a_rose, root / "train" / "tulip" / "a_rose_filed_as_tulip.jpg")  # and under another class
    data = load_data(root)
    duplicates = find_duplicates(p for p, _ in data.train.samples + data.val.samples)
    assert len(duplicates) == 1
    assert {p.name for p in duplicates[0]} == {a_rose.name, "copy_of_a_rose.jpg", "a_rose_filed_as_tulip.jpg"}
    check_for_training(data)
    assert "1 photo(s) in val are byte-identical copies of training photos" in caplog.text
    assert "1 photo(s) are filed under two classes" in caplog.text
    scanned = json.loads(CliRunner().invoke(app, ["scan", str(root), "--json"]).stdout)
    assert [[Path(p).name for p in group] for group in scanned["duplicates"]] == \
        [[p.name for p in group] for group in duplicates]


def test_training_names_near_copies_that_leak_into_val_or_carry_two_labels(flowers_subset, tmp_path, caplog):
    """A photo saved again smaller, or recoloured, has other bytes: training finds it by its difference hash."""
    from PIL import Image, ImageEnhance

    root = split_tree(flowers_subset, tmp_path / "split_tree")
    a_rose = sorted((root / "train" / "rose").iterdir())[0]
    photo = Image.open(a_rose).convert("RGB")
    photo.resize((96, 96)).save(root / "val" / "rose" / "rose_from_the_phone.jpg", quality=70)
    ImageEnhance.Color(photo).enhance(1.1).save(root / "train" / "tulip" / "a_rose_recoloured.png")
    data = load_data(root, fingerprints=True)
    check_for_training(data)
    assert "1 photo(s) in val are near-identical copies (resized, re-saved or recoloured) of training photos" \
        in caplog.text and "rose_from_the_phone.jpg" in caplog.text
    assert "1 photo(s) are filed under two classes as near-identical copies" in caplog.text
    assert "byte-identical" not in caplog.text
    caplog.clear()
    check_for_training(load_data(root, fingerprints=True))  # mvkit compare: every model trains on the same data
    assert "near-identical" not in caplog.text, "said once a process"
    elsewhere = shutil.copytree(root, tmp_path / "elsewhere")  # photos not warned about yet
    check_for_training(load_data(elsewhere))  # without the hashes (eval, verify): no search, no warning
    assert "near-identical" not in caplog.text
    check_for_training(load_data(elsewhere, fingerprints=True))
    assert "near-identical" in caplog.text


def test_unreadable_folders_symlink_loops_and_empty_classes_are_reported(flowers_subset, tmp_path, caplog):
    import os

    root = tmp_path / "photos"
    shutil.copytree(flowers_subset, root)
    (root / "daisy" / "loop").symlink_to(root / "daisy", target_is_directory=True)
    (root / "rose" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "empty_class").mkdir()
    data = load_data(root)
    reasons = {Path(path).name: reason for path, reason in data.skipped}
    assert "symlink loop" in reasons["loop"] and "broken link" in reasons["gone.jpg"]
    assert "empty_class" in caplog.text and "empty_class" not in data.classes
    assert len(data.train) + len(data.val) == 80  # the loop did not list daisy twice
    os.chmod(root / "tulip", 0)
    try:
        if os.access(root / "tulip", os.R_OK):
            pytest.skip("running as root: permissions do not stop reading")
        with pytest.raises(MvkitError):
            load_data(root)
    finally:
        os.chmod(root / "tulip", 0o755)


def test_eval_on_all_photos_combines_both_parts(flowers_checkpoint, flowers_subset):
    from mvkit.data.datasets import combined
    from mvkit.evaluate import evaluate
    from mvkit.models import load_model

    data = load_data(flowers_subset)
    everything = combined(data.train, data.val)
    result = evaluate(load_model(flowers_checkpoint), everything)
    assert result.count == 80 and everything.transform is None  # the caller's dataset is not changed
    assert data.train.transform is None and data.val.transform is None


def test_eval_scores_a_trained_model_on_the_photos_its_training_held_out(flowers_checkpoint, flowers, flowers_subset,
                                                                         tmp_path, capsys):
    """A run with --val-fraction 0.5 (or another seed, or photos added since) recorded its split: `mvkit eval` of
    its checkpoint on the same data scores that split's val, not a default split whose val it partly trained on."""
    from mvkit.cli import run
    from mvkit.data.datasets import split_record
    from mvkit.evaluate import evaluate
    from mvkit.models import load_model, save_checkpoint

    checkpoint = tmp_path / "half.safetensors"
    save_checkpoint(load_model(flowers_checkpoint), checkpoint,
                    extra={"split": split_record(str(flowers_subset), 0.5, 3, None)})
    held_out = load_data(flowers_subset, val_fraction=0.5, seed=3).val
    expected = evaluate(load_model(checkpoint), held_out)

    assert run(["eval", str(checkpoint), str(flowers_subset), "--out", str(tmp_path / "own")]) == 0
    shown = capsys.readouterr().out
    assert "val: the photos held out when it was trained (the split half.safetensors records)" in shown
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert own["count"] == expected.count == 40
    assert own["confusion"] == expected.confusion.tolist() and own["top1"] == expected.top1

    # an explicit split is the user's: the default fraction gives its 15 photos again
    assert run(["eval", str(checkpoint), str(flowers_subset), "--val-fraction", "0.2", "--out",
                str(tmp_path / "asked")]) == 0
    assert "held out when it was trained" not in capsys.readouterr().out
    assert json.loads((tmp_path / "asked" / "metrics.json").read_text())["count"] == 15

    # trained with a separate --val folder: its val photos are that folder's, not a split of the training photos
    val = tmp_path / "val"
    for class_dir in sorted(p for p in flowers.iterdir() if p.is_dir()):
        (val / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.glob("*.jpg"))[16:20]:
            shutil.copy(photo, val / class_dir.name / photo.name)
    save_checkpoint(load_model(flowers_checkpoint), checkpoint,
                    extra={"split": split_record(str(flowers_subset), 0.2, 0, None, val=val)})
    assert run(["eval", str(checkpoint), str(flowers_subset), "--out", str(tmp_path / "folder")]) == 0
    assert json.loads((tmp_path / "folder" / "metrics.json").read_text())["count"] == 20


# ---- property-based: the parsers never fail with anything but a clear MvkitError ------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(cells, cells, cells), max_size=8), header=st.sampled_from(
    ["path,label", "path,label,split", "label,path", "file,class", " path , label ,split"]))
def test_manifest_parser_accepts_or_refuses_clearly(tmp_path_factory, rows, header):
    from mvkit.data.manifest import SPLIT_NAMES, read_manifest

    folder = tmp_path_factory.mktemp("csv")
    manifest = folder / "m.csv"
    with manifest.open("w", newline="") as handle:
        import csv

        writer = csv.writer(handle)
        writer.writerow([name for name in header.split(",")])
        writer.writerows(rows)
    try:
        parsed = read_manifest(manifest)
    except MvkitError as exc:
        assert str(exc)
        return
    assert parsed and all(label.strip() and label == label.strip() for _, label, _ in parsed)
    assert all(split in (None, *SPLIT_NAMES.values()) for _, _, split in parsed)
    assert len({str(path.resolve()) for path, _, _ in parsed}) == len(parsed)  # each photo once


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=st.dictionaries(st.sampled_from(["format", "model_name", "labels", "preprocess", "extra", "metrics"]),
                              json_values, max_size=3),
       preprocess_change=st.dictionaries(st.sampled_from(["size", "crop_pct", "interpolation", "mean", "std"]),
                                         json_values, max_size=2))
def test_sidecar_parser_accepts_or_refuses_clearly(tmp_path_factory, change, preprocess_change):
    from mvkit.artifact import Artifact
    from mvkit.preprocess import Preprocess

    good = Artifact(path=Path("m.onnx"), format="onnx", model_name="mobilevit_xxs", labels=["a", "b"],
                    preprocess=Preprocess(64, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3)).to_dict()
    good.update(change)
    if isinstance(good.get("preprocess"), dict):
        good["preprocess"] = {**good["preprocess"], **preprocess_change}
    folder = tmp_path_factory.mktemp("sidecar")
    (folder / "m.onnx.mvkit.json").write_text(json.dumps(good))
    try:
        loaded = Artifact.load(folder / "m.onnx")
    except MvkitError as exc:
        assert "sidecar" in str(exc)
        return
    assert loaded.labels and all(isinstance(label, str) for label in loaded.labels)
    assert 16 <= loaded.preprocess.size <= 4096 and all(v > 0 for v in loaded.preprocess.std)


def test_a_source_recorded_relative_to_the_sidecar_reads_back_without_dot_dots(tmp_path, monkeypatch):
    """The checkpoint is stored relative to the sidecar's folder (so run folders move); read back it is a plain
    path, relative to the working directory when below it, not "runs/x/../../ck.safetensors"."""
    from mvkit.artifact import Artifact
    from mvkit.preprocess import Preprocess

    checkpoint = tmp_path / "runs" / "a" / "best.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    exported = tmp_path / "exports" / "phone" / "best.onnx"
    exported.parent.mkdir(parents=True)
    exported.write_bytes(b"x")
    Artifact(path=exported, format="onnx", model_name="mobilevit_xxs", labels=["a", "b"],
             preprocess=Preprocess(64, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3), source=str(checkpoint)).save()
    assert json.loads((tmp_path / "exports/phone/best.onnx.mvkit.json").read_text())["source"].startswith("..")
    monkeypatch.chdir(tmp_path)
    assert Artifact.load(Path("exports/phone/best.onnx")).source == "runs/a/best.safetensors"
    monkeypatch.chdir(tmp_path / "exports")
    assert Artifact.load(Path("phone/best.onnx")).source == str(checkpoint.resolve())
    # the file copied away from its checkpoint, then used from a folder that holds another best.safetensors: the
    # checkpoint is looked for beside the file only, never in the working folder
    (tmp_path / "deploy").mkdir()
    for name in ("best.onnx", "best.onnx.mvkit.json"):
        (tmp_path / "deploy" / name).write_bytes((exported.parent / name).read_bytes())
    (tmp_path / "deploy" / "best.onnx.mvkit.json").write_text(
        (exported.parent / "best.onnx.mvkit.json").read_text().replace("../../runs/a/best.safetensors", "best.safetensors"))
    (tmp_path / "other_run").mkdir()
    (tmp_path / "other_run" / "best.safetensors").write_bytes(b"another model")
    monkeypatch.chdir(tmp_path / "other_run")
    moved = Artifact.load(Path("../deploy/best.onnx"))
    assert moved.source == str(tmp_path / "deploy" / "best.safetensors")
    from mvkit.verify import reference_predictor

    with pytest.raises(MvkitError, match=r"made from .*deploy/best.safetensors, which is not there any more"):
        reference_predictor(moved)


def test_scan_finds_a_photo_resized_re_saved_or_recoloured_under_other_names(flowers_subset, tmp_path):
    """Byte-identical copies were all scan found; a copy saved again by a phone or an editor leaks into val just
    the same."""
    from PIL import Image, ImageEnhance
    from typer.testing import CliRunner

    from mvkit.cli import app

    root = tmp_path / "photos"
    root.mkdir()
    originals = [sorted((flowers_subset / name).glob("*.jpg"))[3] for name in
                 ("daisy", "dandelion", "rose", "sunflower", "tulip")]
    for photo in originals:
        shutil.copy(photo, root / photo.name)
    rose = Image.open(originals[2]).convert("RGB")
    rose.resize((96, 96)).save(root / "rose_small.jpg", quality=70)
    ImageEnhance.Brightness(rose).enhance(1.08).save(root / "rose_brighter.png")
    scanned = json.loads(CliRunner().invoke(app, ["scan", str(root), "--json"]).stdout)
    assert scanned["duplicates"] == []
    assert [[Path(p).name for p in group] for group in scanned["near_duplicates"]] == \
        [sorted([originals[2].name, "rose_brighter.png", "rose_small.jpg"])]
