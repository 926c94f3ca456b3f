"""Hostile inputs through the command line: each case gives one `error:` line, exit status 2, no traceback, and
leaves nothing behind. Grow this module with every case found.

The cases run in-process through `mvkit.cli.run`, the function `mvkit` itself calls (the entry point adds only
the log-file redirection, tested at the end with a real `mvkit` process)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mvkit.cli import run
from mvkit.errors import MvkitError

REPO = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_refused(capsys, argv: list[str], folder: Path, *needles: str) -> str:
    """Runs argv; checks status 2, exactly one `error:` line, no traceback, and that `folder` is unchanged."""
    before = tree(folder)
    code = run([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err, captured.out)
    error_lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in captured.err, (needle, captured.err)
    assert tree(folder) == before, "a refused command left files behind"
    return captured.err


def copy_artifact(source: Path, folder: Path) -> Path:
    target = folder / source.name
    (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    shutil.copy(str(source) + ".mvkit.json", str(target) + ".mvkit.json")
    return target


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(64, path.stat().st_size // 3)])


# ---- files that are damaged or do not fit ------------------------------------------------------------

@pytest.mark.parametrize("fmt, part", [("safetensors", None), ("onnx", None), ("torchscript", None),
                                       ("executorch", None), ("coreml", "Data/com.apple.CoreML/weights/weight.bin"),
                                       ("coreml", "Data/com.apple.CoreML/model.mlmodel")])
def test_truncated_artifacts_are_refused_by_predict_and_verify(exported, fmt, part, photos, flowers_subset,
                                                                tmp_path, capsys):
    if fmt not in exported:
        pytest.skip(f"{fmt} extra not installed")
    artifact = copy_artifact(exported[fmt], tmp_path)
    truncate(artifact / part if part else artifact)
    assert_refused(capsys, ["predict", artifact, photos["coffee"]], tmp_path, "error:")
    assert_refused(capsys, ["verify", artifact, "--data", flowers_subset], tmp_path, "error:")


def edit_sidecar(artifact: Path, change) -> None:
    side = Path(str(artifact) + ".mvkit.json")
    data = json.loads(side.read_text())
    change(data)
    side.write_text(json.dumps(data))


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(labels=d["labels"][:3]), "3 labels"),
    (lambda d: d["preprocess"].update(size=0), "preprocess size"),
    (lambda d: d["preprocess"].update(std=[0.0, 0.2, 0.2]), "std must be positive"),
    (lambda d: d["preprocess"].update(mean=[0.5]), "3 values"),
    (lambda d: d.update(labels="daisy,rose"), "list"),
    (lambda d: d.pop("format"), "missing key"),
])
def test_a_sidecar_that_does_not_fit_the_model_is_refused(exported, change, needle, photos, tmp_path, capsys):
    for fmt in ("safetensors", "onnx"):
        folder = tmp_path / fmt
        folder.mkdir()
        artifact = copy_artifact(exported[fmt], folder)
        edit_sidecar(artifact, change)
        assert_refused(capsys, ["predict", artifact, photos["coffee"]], tmp_path, needle)


def test_a_sidecar_that_is_not_json_is_refused(exported, photos, tmp_path, capsys):
    artifact = copy_artifact(exported["onnx"], tmp_path)
    Path(str(artifact) + ".mvkit.json").write_text("{not json")
    assert_refused(capsys, ["predict", artifact, photos["coffee"]], tmp_path, "damaged")


@pytest.mark.parametrize("damage, needle", [
    (lambda props: props.update(labels="daisy,rose"), "damaged mvkit metadata"),  # not JSON
    (lambda props: props.update(labels="[]"), "non-empty list"),
    (lambda props: props.pop("preprocess"), "missing key 'preprocess'"),
])
def test_a_file_whose_own_record_is_damaged_is_refused_without_its_sidecar(exported, damage, needle, photos,
                                                                          tmp_path, capsys):
    """Without a sidecar the file's embedded record is all mvkit has: a damaged one is named, never guessed."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(exported["onnx"]))
    props = {p.key: p.value for p in model.metadata_props}
    damage(props)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    artifact = tmp_path / "alone.onnx"
    onnx.save(model, str(artifact))
    assert_refused(capsys, ["predict", artifact, photos["coffee"]], tmp_path, needle)


def test_a_batch_job_is_refused_before_any_file(exported, flowers_subset, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    cases = [(["--out", out / "p.xlsx"], "write .parquet, .csv or .jsonl"),
             (["--out", out / "p.csv", "--engine", "spark"], "--engine must be one of"),
             (["--out", out / "p.csv", "--workers", "-1"], "--workers"),
             (["--out", out / "p.csv", flowers_subset], "one INPUT")]
    for options, needle in cases:
        assert_refused(capsys, ["predict", exported["onnx"], flowers_subset, *options], tmp_path, needle)
    assert_refused(capsys, ["predict", exported["onnx"], tmp_path / "nowhere", "--out", out / "p.csv"], tmp_path,
                   "does not exist")
    # a file of another program under the name: one error line (it was a pyarrow traceback), the file kept
    (out / "theirs.parquet").write_text("path,label\n")
    assert_refused(capsys, ["predict", exported["onnx"], flowers_subset, "--out", out / "theirs.parquet"], tmp_path,
                   "theirs.parquet is not a Parquet file that can be read", "use a new --out or delete it")


# ---- no silent wrong answer ---------------------------------------------------------------------------

def test_a_model_name_without_weights_is_refused_by_predict_and_eval(photos, flowers_subset, tmp_path, capsys):
    assert_refused(capsys, ["predict", "tf_efficientnet_lite0", photos["coffee"]], tmp_path, "--pretrained")
    assert_refused(capsys, ["eval", "mobilevit_xxs", flowers_subset, "--out", tmp_path / "eval"], tmp_path,
                   "random weights")


def test_weights_with_another_class_count_are_refused_for_predict(exported, photos, tmp_path, capsys):
    # a real timm state dict (the fine-tuned Lite0's safetensors) whose head has 5 classes, not ImageNet's 1000
    assert_refused(capsys, ["predict", "tf_efficientnet_lite0", "--weights", exported["safetensors"], photos["coffee"]],
                   tmp_path, "another number of classes")


# ---- options checked before any work -------------------------------------------------------------------

def test_export_checks_every_format_and_option_first(exported, tmp_path, capsys):
    checkpoint = copy_artifact(exported["safetensors"], tmp_path)
    assert_refused(capsys, ["export", checkpoint, "-f", "onnx", "-f", "bogus"], tmp_path, "unknown format 'bogus'")
    assert_refused(capsys, ["export", checkpoint, "-f", "onnx,bogus"], tmp_path, "unknown format 'bogus'")
    assert_refused(capsys, ["export", checkpoint, "-f", "onxx"], tmp_path, "unknown format 'onxx' (did you mean onnx?)")
    assert_refused(capsys, ["export", checkpoint, "-f", "onnx", "--precision", "fp32"], tmp_path,
                   "does not take --precision")
    assert_refused(capsys, ["export", checkpoint, "-f", "coreml", "--precision", "fp8"], tmp_path, "fp16, fp32, mixed")
    assert_refused(capsys, ["export", checkpoint, "-f", "coreml", "--sizes", "224,abc"], tmp_path, "--sizes")
    # coremltools would raise the package to iOS 16 without a word: it would not load on the iOS 15 asked for
    assert_refused(capsys, ["export", checkpoint, "-f", "coreml", "--target", "iOS15", "--compress", "palettize4"],
                   tmp_path, "--compress palettize4 needs --target iOS16 or later")
    assert_refused(capsys, ["export", tmp_path / "missing.safetensors"], tmp_path, "does not exist")
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    assert_refused(capsys, ["export", checkpoint, "-f", "onnx", "--out", blocked / "sub"], tmp_path, "not a folder")
    if "openvino" in exported:  # an artifact that is a folder, where a checkpoint is needed: not a model name
        ir = copy_artifact(exported["openvino"], tmp_path)
        assert_refused(capsys, ["export", ir, "-f", "onnx"], tmp_path, "is a openvino artifact, not a checkpoint")


def test_quantize_checks_calibration_data_format_and_method_first(exported, tmp_path, capsys):
    checkpoint = copy_artifact(exported["safetensors"], tmp_path)
    onnx_file = copy_artifact(exported["onnx"], tmp_path)
    assert_refused(capsys, ["quantize", checkpoint, "--calib", tmp_path / "missing"], tmp_path, "does not exist")
    assert_refused(capsys, ["quantize", checkpoint], tmp_path, "--calib")
    assert_refused(capsys, ["quantize", checkpoint, "--method", "qat", "-f", "onnx", "--calib", "builtin:fashion"],
                   tmp_path, "makes no onnx artifact")
    assert_refused(capsys, ["quantize", onnx_file, "-f", "executorch", "--calib", "builtin:fashion"], tmp_path,
                   "not a onnx artifact")
    assert_refused(capsys, ["quantize", checkpoint, "-f", "onnx", "--epochs", "3", "--calib", "builtin:fashion"],
                   tmp_path, "--epochs")
    assert_refused(capsys, ["quantize", checkpoint, "--method", "int4", "--calib", "builtin:fashion"], tmp_path,
                   "--method")
    # QAT's numbers are checked with the plan, before the model is loaded and the photos decoded
    assert_refused(capsys, ["quantize", checkpoint, "--method", "qat", "--epochs", "0", "--calib", "builtin:fashion"],
                   tmp_path, "executorch qat: --epochs must be at least 1, not 0")
    assert_refused(capsys, ["quantize", checkpoint, "--method", "qat", "--lr", "-1", "--calib", "builtin:fashion"],
                   tmp_path, "--lr must be positive, not -1.0")
    # Core ML's int8 is a weight compression at export: the refusal says where it is
    assert_refused(capsys, ["quantize", checkpoint, "-f", "coreml", "--calib", "builtin:fashion"], tmp_path,
                   "makes no coreml artifact", "mvkit export MODEL -f coreml --compress int8")


def test_an_out_path_through_a_file_is_refused_before_any_work(exported, flowers_subset, tmp_path, capsys):
    """--out inside what is a file: eval, compare, report, live and demo gave a FileExistsError or
    NotADirectoryError traceback, compare only after training its first model."""
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    (tmp_path / "clip").mkdir()
    shutil.copy(next((flowers_subset / "daisy").iterdir()), tmp_path / "clip")
    for argv in (["eval", exported["onnx"], flowers_subset, "--out", blocked],
                 ["compare", "mobilevit_xxs", "--data", flowers_subset, "--epochs", "1", "--out", blocked / "cmp"],
                 ["report", exported["onnx"].parent, "--out", blocked / "report.html"],
                 ["live", exported["onnx"], "--source", tmp_path / "clip", "--out", blocked / "live.mp4"],
                 ["demo", "--out", blocked]):
        assert_refused(capsys, argv, tmp_path, "a_file is not a folder")


def test_a_file_out_that_names_a_folder_is_refused_and_the_folder_kept(exported, flowers_subset, tmp_path, capsys):
    """report --out FOLDER deleted the folder, whatever it held, and wrote the page in its place; live --metrics did
    the same, and live --out and predict --out gave a traceback, live's only after the run."""
    from mvkit.bench import BenchRow, write_results

    folder = tmp_path / "results"
    write_results([BenchRow("a.onnx", "onnx", status="loaded", latency_p50_ms=2.0)], folder)  # what report reads
    kept = (folder / "bench.json").read_text()
    (tmp_path / "clip").mkdir()
    shutil.copy(next((flowers_subset / "daisy").iterdir()), tmp_path / "clip")
    for named in ("results", "results.mp4", "results.json", "results.csv"):
        if named != "results":
            shutil.copytree(folder, tmp_path / named)
    for argv, named, example in (
            (["report", folder, "--out", folder], "results", "report.html"),
            (["live", exported["onnx"], "--source", tmp_path / "clip", "--out", tmp_path / "results.mp4"],
             "results.mp4", "live.mp4"),
            (["live", exported["onnx"], "--source", tmp_path / "clip", "--metrics", tmp_path / "results.json"],
             "results.json", "metrics.json"),
            (["predict", exported["onnx"], tmp_path / "clip", "--out", tmp_path / "results.csv"], "results.csv",
             "predictions.csv")):
        assert_refused(capsys, argv, tmp_path, f"{tmp_path / named} is a folder: give the name of the file to write, "
                                               f"e.g. {tmp_path / named / example}")
        assert (tmp_path / named / "bench.json").read_text() == kept


def test_atomic_output_never_swaps_a_folder_for_a_file(tmp_path):
    from mvkit.files import write_atomically

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "photo.jpg").write_bytes(b"jpeg")
    with pytest.raises(MvkitError, match="is a folder"):
        write_atomically(tmp_path / "kept", b"<html>")
    assert (tmp_path / "kept" / "photo.jpg").read_bytes() == b"jpeg" and len(list(tmp_path.iterdir())) == 1


def test_predict_and_bench_refuse_bad_numbers(photos, tmp_path, capsys):
    assert_refused(capsys, ["predict", "tf_efficientnet_lite0", "--pretrained", photos["coffee"], "--batch-size", "0"],
                   tmp_path, "--batch-size")
    assert_refused(capsys, ["bench", "--rounds", "0", photos["coffee"]], tmp_path, "--rounds")
    assert_refused(capsys, ["predict", "MobileViT_XXS", photos["coffee"]], tmp_path, "mobilevit_xxs")
    assert_refused(capsys, ["predict", "tf_efficientnet_lite0", "--pretrained", photos["coffee"], "-k", "0"],
                   tmp_path, "--topk")


def test_live_refuses_a_video_container_it_cannot_write(exported, photos, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    shutil.copy(photos["coffee"], tmp_path / "photos")
    assert_refused(capsys, ["live", exported["onnx"], "--source", tmp_path / "photos", "--out", tmp_path / "x.gif"],
                   tmp_path, "write a video file, .mp4")


# ---- training inputs ----------------------------------------------------------------------------------

def test_train_refuses_bad_recipes_and_leaves_no_run_folder(flowers_subset, tmp_path, capsys):
    out = tmp_path / "run"
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    assert_refused(capsys, ["train", "--recipe", bad_yaml, "--out", out], tmp_path, "not valid YAML", "line")
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text(f"model: mobilevit_xxs\ndata: {flowers_subset}\nepochs: many\n")
    assert_refused(capsys, ["train", "--recipe", wrong_type, "--out", out], tmp_path, "epochs must be int")
    wrong_type.write_text(f"model: mobilevit_xxs\ndata: {flowers_subset}\nlr: [0.001]\n")  # was a TypeError traceback
    assert_refused(capsys, ["train", "--recipe", wrong_type, "--out", out], tmp_path, "lr must be float, not [0.001]")
    wrong_type.write_text(f"model: mobilevit_xxs\ndata: {flowers_subset}\nepochz: 3\n")
    assert_refused(capsys, ["train", "--recipe", wrong_type, "--out", out], tmp_path, "epochz (did you mean epochs?)")
    assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--img-size", "0", "--out", out], tmp_path,
                   "img_size")
    assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--ema", "--ema-decay", "1.5", "--out", out],
                   tmp_path, "ema_decay must be in (0, 1), not 1.5")
    assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--img-size", "64", "--progressive-from", "96",
                            "--out", out], tmp_path, "progressive_from 96 px must be below the input size 64 px")
    # without --img-size the size is known only once the photos are scanned: 128 px, their native size
    assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--no-pretrained", "--progressive-from", "128",
                            "--out", out], tmp_path, "progressive_from 128 px must be below the input size 128 px")
    # a ViT takes one size, so it cannot rise epoch by epoch
    assert_refused(capsys, ["train", "deit_tiny", flowers_subset, "--preset", "scratch", "--img-size", "128",
                            "--progressive-from", "64", "--out", out], tmp_path, "deit_tiny takes one input size, 128 px")
    # a teacher by name would distil from a classifier head built at random for these classes
    assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--preset", "scratch", "--teacher",
                            "tf_efficientnet_lite0", "--out", out], tmp_path, "its classifier for this data's classes")
    assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--preset", "scratch", "--teacher",
                            tmp_path / "runs" / "best.safetensors", "--out", out], tmp_path, "does not exist")
    import torch

    if not torch.cuda.is_available():  # accelerate trained fp16 on a CPU as fp32, without a word
        assert_refused(capsys, ["train", "mobilevit_xxs", flowers_subset, "--mixed-precision", "fp16", "--out", out],
                       tmp_path, "--mixed-precision fp16 runs on GPUs only")
    assert not out.exists()


def test_a_manifest_whose_second_class_is_all_missing_says_so_in_one_line(flowers_subset, tmp_path):
    """Its one listed rose photo is gone: the refusal said "holds one class ('daisy')", named no missing file, and
    came after a blank line (a progress bar stopped before it had shown anything)."""
    daisies = sorted((flowers_subset / "daisy").iterdir())[:3]
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},daisy\n" for p in daisies) + "gone/rose1.jpg,rose\n")
    out = tmp_path / "run"
    shown = subprocess.run([sys.executable, "-m", "mvkit.cli", "train", "mobilevit_xxs", str(manifest), "--out",
                            str(out)], capture_output=True, text=True)
    assert shown.returncode == 2
    assert shown.stderr.startswith("error:") and len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert "readable photos of one class only ('daisy'; none of rose)" in shown.stderr
    assert "gone/rose1.jpg" in shown.stderr and not out.exists()


def test_core_ml_sizes_a_vit_cannot_take_are_refused(flowers_subset, tmp_path, capsys):
    from mvkit.models import create_model, save_checkpoint

    checkpoint = save_checkpoint(create_model("deit_tiny", labels=["a", "b"]), tmp_path / "deit.safetensors").path
    assert_refused(capsys, ["export", checkpoint, "-f", "coreml", "--sizes", "192,224"], tmp_path,
                   "takes one input size, 224 px")


def test_a_val_folder_named_unlike_its_training_folder_is_refused(flowers_subset, tmp_path, capsys):
    root = tmp_path / "photos"
    for part, members in (("train", slice(0, 12)), ("val", slice(12, 16))):
        for name in ("rose", "tulip"):
            (root / part / name).mkdir(parents=True)
            for photo in sorted((flowers_subset / name).iterdir())[members]:
                shutil.copy(photo, root / part / name / photo.name)
    (root / "val" / "tulip").rename(root / "val" / "Tulips")
    assert_refused(capsys, ["train", "mobilevit_xxs", root, "--no-pretrained", "--out", tmp_path / "run"], tmp_path,
                   "no training photo: Tulips (train has 'tulip': a misnamed folder?)")


def test_eval_of_a_class_folder_the_model_does_not_know_is_refused(exported, flowers_subset, tmp_path, capsys):
    data = tmp_path / "photos"
    shutil.copytree(flowers_subset, data)
    (data / "rose").rename(data / "roses")
    for model in (exported["safetensors"], exported["onnx"]):
        assert_refused(capsys, ["eval", model, data, "--out", tmp_path / "eval"], tmp_path,
                       "roses (the model has 'rose': a misnamed folder?)")


def test_a_class_added_after_the_run_folders_split_is_refused(flowers_subset, tmp_path, capsys):
    from mvkit.data import load_data

    root, out = tmp_path / "photos", tmp_path / "run"
    shutil.copytree(flowers_subset, root)
    out.mkdir()
    load_data(root, split_file=out / "split.json")  # the split an earlier run saved
    shutil.copytree(root / "tulip", root / "orchid")
    assert_refused(capsys, ["train", "mobilevit_xxs", root, "--no-pretrained", "--out", out], tmp_path,
                   "no photo of class(es) orchid is in the saved split")


def test_yaml_numbers_without_a_dot_are_numbers(flowers_subset, tmp_path):
    from mvkit.train import build_recipe

    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"model: mobilevit_xxs\ndata: {flowers_subset}\nlr: 1e-4\nweight_decay: 5e-2\n")
    recipe = build_recipe(recipe_file=recipe_file)
    assert recipe.lr == 1e-4 and recipe.weight_decay == 0.05


def write_manifest(path: Path, rows: list[tuple]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"][: len(rows[0])])
        writer.writerows(rows)
    return path


def flower_files(flowers_subset: Path, per_class: int = 4) -> list[tuple[Path, str]]:
    return [(p, folder.name) for folder in sorted(flowers_subset.iterdir())
            for p in sorted(folder.glob("*.jpg"))[:per_class]]


@pytest.mark.parametrize("rows, needle", [
    (lambda files: [(str(p), "") for p, _ in files], "empty label"),
    (lambda files: [(str(p), c) for p, c in files] + [(str(files[0][0]), "rose")], "listed twice"),
    (lambda files: [(str(p), c, "test") for p, c in files], "split 'test'"),
    (lambda files: [(str(p), "daisy") for p, _ in files], "one class"),
    (lambda files: [(str(p), c, "train") for p, c in files], "no photo as val"),
])
def test_manifest_mistakes_are_refused_before_training(flowers_subset, tmp_path, rows, needle, capsys):
    manifest = write_manifest(tmp_path / "photos.csv", rows(flower_files(flowers_subset)))
    assert_refused(capsys, ["train", "mobilevit_xxs", manifest, "--no-pretrained", "--out", tmp_path / "run"],
                   tmp_path, needle)


def test_a_corrupt_resume_state_is_refused_without_unpickling(tmp_path, capsys):
    import pickle

    from mvkit.train import build_recipe

    out = tmp_path / "run"
    out.mkdir()
    build_recipe(model="mobilevit_xxs", data="builtin:fashion", out=str(out), pretrained=False).save(out / "recipe.yaml")
    (out / "resume.pt").write_bytes(pickle.dumps({"model": object()}))
    err = assert_refused(capsys, ["train", "--resume", "--out", out], tmp_path, "resume state")
    assert "weights_only" not in err



def test_resume_refuses_options_it_would_ignore(tmp_path, capsys):
    """`--resume --epochs 30` resumed the recorded run and trained its old number of epochs, without a word."""
    from mvkit.train import build_recipe

    out = tmp_path / "run"
    out.mkdir()
    build_recipe(model="mobilevit_xxs", data="builtin:fashion", out=str(out), pretrained=False).save(out / "recipe.yaml")
    assert_refused(capsys, ["train", "--resume", "--out", out, "--epochs", "30", "--ema"], tmp_path,
                   "takes nothing else (got --epochs, --ema)", f"mvkit train {out / 'last.safetensors'} DATA")
    assert_refused(capsys, ["train", "mobilevit_xxs", "builtin:fashion", "--resume", "--out", out], tmp_path,
                   "(got MODEL, DATA)")


def test_verify_with_missing_data_is_refused(exported, tmp_path, capsys):
    artifact = copy_artifact(exported["onnx"], tmp_path)
    assert_refused(capsys, ["verify", artifact, "--data", tmp_path / "nowhere"], tmp_path, "does not exist")


def test_verify_against_a_checkpoint_trained_again_or_gone_is_refused(exported, flowers_subset, tmp_path, capsys):
    """The file's checkpoint overwritten by another run, then deleted: verify names what happened, never compares
    against weights the file was not made from."""
    from mvkit.artifact import Artifact
    from mvkit.models import create_model, save_checkpoint, set_preprocess

    artifact = copy_artifact(exported["onnx"], tmp_path)
    checkpoint = copy_artifact(exported["safetensors"], tmp_path)
    retrained = create_model("tf_efficientnet_lite0", labels=Artifact.load(checkpoint).labels)
    set_preprocess(retrained, size=96, crop_pct=1.0)
    save_checkpoint(retrained, checkpoint)
    assert_refused(capsys, ["verify", artifact, "--data", flowers_subset], tmp_path,
                   "has changed since", "--reference")
    checkpoint.unlink()
    assert_refused(capsys, ["verify", artifact, "--data", flowers_subset], tmp_path,
                   f"{checkpoint.parent.name}/{checkpoint.name}, which is not there any more")


# ---- the real entry point ------------------------------------------------------------------------------

def test_scan_of_a_folder_without_files_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()  # a wrong folder is a mistake, not a clean bill
    assert_refused(capsys, ["scan", tmp_path / "empty"], tmp_path, "holds no files")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no photos here")
    assert_refused(capsys, ["scan", tmp_path / "notes"], tmp_path, "holds no photos, only other files (README.txt)")


def test_the_mvkit_process_prints_one_error_line_and_keeps_json_pure(tmp_path, photos):
    result = subprocess.run([sys.executable, "-m", "mvkit.cli", "export", str(tmp_path / "none.safetensors"),
                             "-f", "onnx"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
    listed = subprocess.run([sys.executable, "-m", "mvkit.cli", "predict", "tf_efficientnet_lite0", "--pretrained",
                             str(photos["coffee"]), "--json", "-k", "1"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["predictions"][0]["top"][0]["label"] == "espresso"


def test_a_missing_model_file_is_refused_before_any_import_and_never_called_a_model_name(tmp_path):
    """Each command imported torch and timm (4-8 s) before saying that its model file does not exist; `train` and
    `compare` called a missing checkpoint an unknown model name; `eval` without DATA called it a model name that
    records no data."""
    missing, photos = str(tmp_path / "gone.safetensors"), str(tmp_path)
    commands = [["predict", missing, photos], ["eval", missing], ["eval", missing, photos],
                ["export", missing], ["quantize", missing], ["verify", str(tmp_path / "gone.onnx")],
                ["inspect", str(tmp_path / "gone_openvino")], ["bench", str(tmp_path / "gone.pte")],
                ["bench", "--all-formats", missing], ["train", missing, photos], ["compare", missing, "--data", photos],
                ["live", str(tmp_path / "gone.mlpackage"), "-s", "0"]]
    no_run = [["train", "--resume", "--out", str(tmp_path / "nowhere")]]  # its own check, also before the imports
    probe = ("import contextlib, io, json, sys\n"
             "from mvkit.cli import run\n"
             "shown = []\n"
             f"for argv in {commands + no_run!r}:\n"
             "    err = io.StringIO()\n"
             "    with contextlib.redirect_stderr(err):\n"
             "        shown.append([run(argv), err.getvalue()])\n"
             "print(json.dumps([shown, 'torch' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    shown, imported_torch = json.loads(done.stdout.strip().splitlines()[-1])
    for argv, (code, err) in zip(commands, shown):
        assert code == 2 and err.startswith("error: ") and "does not exist" in err, (argv, code, err)
        assert "model" not in err.split("does not exist")[1], (argv, err)  # no "unknown model" or "model name"
    assert shown[-1][0] == 2 and shown[-1][1].startswith("error: no run to resume in "), shown[-1]
    assert not imported_torch
