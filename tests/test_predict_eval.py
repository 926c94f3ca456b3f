"""predict and eval end to end, through the CLI, with real weights and real photos."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mvkit.cli import app
from mvkit.data import load_data
from mvkit.errors import MvkitError
from mvkit.evaluate import evaluate
from mvkit.export import export
from conftest import probe_checkpoint, serve_folder

runner = CliRunner()


def run_cli(*args: str) -> dict:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pretrained_lite0_offline_on_coffee_and_chelsea(photos):
    output = run_cli("predict", "tf_efficientnet_lite0", "--pretrained", str(photos["coffee"]),
                     str(photos["chelsea"]), "--json", "-k", "3")
    by_name = {Path(p["path"]).stem: p["top"] for p in output["predictions"]}
    assert by_name["coffee"][0]["label"] == "espresso" and by_name["coffee"][0]["probability"] > 0.9
    assert "cat" in by_name["chelsea"][0]["label"]
    assert len(by_name["chelsea"]) == 3 and by_name["chelsea"][0]["probability"] >= by_name["chelsea"][1]["probability"]


def test_predict_reads_an_iphone_heic_photo(tmp_path, photos):
    from PIL import Image

    with Image.open(photos["coffee"]) as photo:
        photo.save(tmp_path / "coffee.heic", "HEIF", quality=90)
    encoded = (tmp_path / "coffee.heic").read_bytes()
    (tmp_path / "cut_off.heic").write_bytes(encoded[: len(encoded) // 2])  # a copy interrupted half-way
    output = run_cli("predict", "tf_efficientnet_lite0", "--pretrained", str(tmp_path), "--json", "-k", "1")
    assert [Path(p["path"]).name for p in output["predictions"]] == ["coffee.heic"]
    assert output["predictions"][0]["top"][0]["label"] == "espresso"
    assert [(Path(s["path"]).name, s["reason"].split(":")[0]) for s in output["skipped"]] == \
        [("cut_off.heic", "corrupt or truncated")]


def test_predict_on_a_folder_reports_skipped_files(tmp_path, photos):
    for photo in photos.values():
        (tmp_path / photo.name).write_bytes(photo.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(photos["coffee"].read_bytes()[:500])
    output = run_cli("predict", "tf_efficientnet_lite0", "--pretrained", str(tmp_path), "--json", "-k", "1")
    assert sorted(Path(p["path"]).name for p in output["predictions"]) == ["chelsea.jpg", "coffee.jpg"]
    assert [Path(s["path"]).name for s in output["skipped"]] == ["broken.jpg"]


@pytest.fixture(scope="module")
def flowers_manifest(flowers, tmp_path_factory) -> Path:
    """100 train + 20 val real photos per class, as a CSV manifest with a split column."""
    lines = ["path,label,split"]
    for class_dir in sorted(p for p in flowers.iterdir() if p.is_dir()):
        for i, photo in enumerate(sorted(class_dir.glob("*.jpg"))[:120]):
            lines.append(f"{photo},{class_dir.name},{'val' if i >= 100 else 'train'}")
    path = tmp_path_factory.mktemp("manifest") / "flowers.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def flowers_checkpoint(flowers_manifest, tmp_path_factory) -> Path:
    return probe_checkpoint(flowers_manifest, 128, tmp_path_factory.mktemp("ckpt") / "flowers_probe.safetensors")


def test_eval_cli_on_real_flowers(flowers_manifest, flowers_checkpoint, tmp_path):
    out = tmp_path / "eval"
    metrics = run_cli("eval", str(flowers_checkpoint), str(flowers_manifest), "--out", str(out), "--json")
    assert metrics["count"] == 100
    # Chance is 0.2. Measured here: 0.65 (128 px photos; 0.78 when upscaled to 192 px).
    assert metrics["top1"] > 0.55
    assert metrics["top5"] == 1.0  # only 5 classes
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (5, 5) and confusion.sum() == 100 and (confusion.sum(axis=1) == 20).all()
    assert np.trace(confusion) / 100 == pytest.approx(metrics["top1"])
    for i, name in enumerate(metrics["classes"]):
        assert metrics["per_class"][name] == pytest.approx(confusion[i, i] / 20)
    assert (out / "confusion.png").stat().st_size > 10_000
    assert json.loads((out / "metrics.json").read_text())["top1"] == metrics["top1"]


def test_eval_on_few_photos_says_how_much_one_photo_moves_it(flowers_manifest, flowers_subset, flowers_checkpoint,
                                                              tmp_path):
    few = runner.invoke(app, ["eval", str(flowers_checkpoint), str(flowers_subset), "--out", str(tmp_path / "few")],
                        terminal_width=200)
    assert few.exit_code == 0 and "note: only 15 photos: one photo moves a top-1 by 6.7 points" in few.output
    enough = runner.invoke(app, ["eval", str(flowers_checkpoint), str(flowers_manifest), "--out",
                                 str(tmp_path / "enough")], terminal_width=200)
    assert enough.exit_code == 0 and "note:" not in enough.output  # 100 photos


def test_eval_takes_an_exported_file_and_runs_it_in_its_runtime(flowers_checkpoint, flowers_manifest, tmp_path):
    """As Ultralytics' val does: the checkpoint's figures, from ONNX Runtime."""
    onnx_file = export(flowers_checkpoint, "onnx", tmp_path).path
    reference = run_cli("eval", str(flowers_checkpoint), str(flowers_manifest), "--out", str(tmp_path / "ckpt"),
                        "--json")
    metrics = run_cli("eval", str(onnx_file), str(flowers_manifest), "--out", str(tmp_path / "onnx"), "--json")
    assert metrics["count"] == reference["count"] == 100
    assert metrics["confusion"] == reference["confusion"]  # fp32: the same answer for every photo


def test_eval_refuses_a_model_that_does_not_know_the_classes(flowers_manifest, lite0):
    data = load_data(flowers_manifest)
    with pytest.raises(MvkitError, match="dandelion"):
        evaluate(lite0, data.val)


def test_eval_refuses_a_misnamed_class_folder_before_decoding_and_leaves_nothing(flowers_subset, flowers_checkpoint,
                                                                                  tmp_path, capsys):
    from mvkit.cli import run

    data = tmp_path / "photos"
    shutil.copytree(flowers_subset, data)
    (data / "rose").rename(data / "roses")
    (data / "sunflower" / "not_a_photo.jpg").write_bytes(b"not a jpeg")
    for model in (flowers_checkpoint, export(flowers_checkpoint, "onnx", tmp_path / "onnx").path):
        assert run(["eval", str(model), str(data), "--out", str(tmp_path / "eval")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err  # the error alone: no bar, no skipped photo
        assert "roses (the model has 'rose': a misnamed folder?)" in err
        assert not (tmp_path / "eval").exists()  # not even the split file


def test_imagenet_model_eval_counts_other_predictions(tmp_path, lite0, photos):
    # Dataset classes named after ImageNet labels: the model's 1000 classes collapse into "(other)".
    manifest = tmp_path / "imagenet.csv"
    manifest.write_text(f"path,label,split\n{photos['coffee']},espresso,val\n{photos['chelsea']},tiger cat,val\n")
    data = load_data(manifest)
    result = evaluate(lite0, data.val)
    assert result.count == 2 and result.top1 == 1.0
    assert result.confusion.shape == (2, 3)


def test_labels_and_paths_in_square_brackets_print_as_they_are(flowers_subset, tmp_path):
    """Rich markup would take "[red]" for a style and drop it from what the user reads."""
    import shutil

    data, photos_dir = tmp_path / "data", tmp_path / "photos [new]"
    for source, name in (("rose", "rose [red]"), ("tulip", "tulip [bold]")):
        shutil.copytree(flowers_subset / source, data / name)
    photos_dir.mkdir()
    shutil.copy(next((flowers_subset / "rose").iterdir()), photos_dir / "[draft] rose.jpg")
    checkpoint = probe_checkpoint(data, 64, tmp_path / "brackets.safetensors")
    result = runner.invoke(app, ["predict", str(checkpoint), str(photos_dir), "-k", "2"], catch_exceptions=False,
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "photos [new]/[draft] rose.jpg" in result.output
    assert "rose [red]" in result.output and "tulip [bold]" in result.output


def test_a_long_confusion_matrix_title_stays_inside_the_figure():
    """mvkit eval titles the chart with the model and data paths; a long one used to run off the image."""
    from mvkit.evaluate import EvalResult, confusion_figure

    classes = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    result = EvalResult(0.72, 1.0, 698, dict.fromkeys(classes, 0.7), classes, np.eye(5, dtype=int) * 100)
    fig = confusion_figure(result, "runs/flowers_finetune_2026_12_07/best.safetensors on "
                                   "/home/someone/datasets/flowers128_photos_from_the_garden (val)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    title = fig.axes[0].title.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1, (title, fig.bbox)


def test_predict_reads_photos_from_urls_and_names_those_it_cannot(photos, tmp_path):
    """As `yolo predict source=https://...` does; served here by a real HTTP server on loopback."""
    (tmp_path / "coffee.jpg").write_bytes(photos["coffee"].read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    with serve_folder(tmp_path) as base:
        output = run_cli("predict", "tf_efficientnet_lite0", "--pretrained", f"{base}/coffee.jpg",
                         f"{base}/missing.jpg", f"{base}/notes.txt", str(photos["chelsea"]), "--json", "-k", "1")
    assert [(p["path"], p["top"][0]["label"]) for p in output["predictions"]][0] == (f"{base}/coffee.jpg", "espresso")
    assert Path(output["predictions"][1]["path"]) == photos["chelsea"]
    assert [(s["path"], s["reason"]) for s in output["skipped"]] == [
        (f"{base}/missing.jpg", "download failed: HTTP 404 File not found"),
        (f"{base}/notes.txt", "not an image Pillow can read (wrong extension or corrupt header)")]


def test_predict_refuses_topk_0_and_points_a_video_to_live(photos, tmp_path):
    result = runner.invoke(app, ["predict", "tf_efficientnet_lite0", "--pretrained", str(photos["coffee"]), "-k", "0"])
    assert result.exit_code == 2 and "--topk" in result.output  # it printed the paths with no labels
    (tmp_path / "coffee.jpg").write_bytes(photos["coffee"].read_bytes())
    (tmp_path / "holiday.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    output = run_cli("predict", "tf_efficientnet_lite0", "--pretrained", str(tmp_path / "coffee.jpg"),
                     str(tmp_path / "holiday.mp4"), "--json", "-k", "1")
    assert output["skipped"][0]["reason"] == "not an image file extension (.mp4) (a video: mvkit live --source plays it)"


def test_python_api_takes_paths_as_the_cli_does_and_refuses_arrays_of_unknown_colour_order(
        flowers_checkpoint, flowers_manifest, photos, tmp_path):
    """predict_files and evaluate take a path where the CLI does; one photo's path used to be read as its characters
    (the first, "/", a scan of the whole disk), and evaluate("x.onnx") failed on a str's missing .labels."""
    from PIL import Image

    from mvkit.predict import predict_files
    from mvkit.runtime import load_predictor

    by_list, _ = predict_files(str(flowers_checkpoint), [photos["coffee"]])
    for one_photo in (str(photos["coffee"]), photos["coffee"]):
        predictions, skipped = predict_files(str(flowers_checkpoint), one_photo)
        assert skipped == [] and [p.path for p in predictions] == [photos["coffee"]]
        assert predictions[0].top == by_list[0].top

    onnx_file = export(flowers_checkpoint, "onnx", tmp_path).path
    val = load_data(flowers_manifest).val
    in_runtime = evaluate(load_predictor(onnx_file), val)
    assert evaluate(str(onnx_file), val).confusion.tolist() == in_runtime.confusion.tolist()
    assert evaluate(flowers_checkpoint, val).confusion.tolist() == in_runtime.confusion.tolist()  # fp32

    predictor = load_predictor(onnx_file)
    photo = Image.open(photos["coffee"]).convert("RGB")
    assert np.array_equal(predictor.predict_images(photo), predictor.predict_images([photo]))
    with pytest.raises(MvkitError, match="takes PIL images, not ndarray.*OpenCV frame is BGR"):
        predictor.predict_images([np.asarray(photo)])
