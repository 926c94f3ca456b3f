"""mvkit compare on real photos with a tiny budget: the table, the chart, the cited column, and resuming."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from mvkit.bench.compare import CompareBudget, compare, pareto_front
from mvkit.cli import run as cli_run
from mvkit.errors import MvkitError


def test_compare_two_families_on_real_photos(flowers_subset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare"
    budget = CompareBudget(epochs=1, img_size=64, formats=("onnx",), int8=False, bench_rounds=3)
    models = ["tf_efficientnet_lite0", "mobilenetv3_small_100"]
    logged: list[str] = []
    statuses: list[str] = []
    rows = compare(models, str(flowers_subset), out, budget, log=logged.append, status=statuses.append)
    # training shows where it is, batch by batch, where it showed a spinner alone for minutes
    assert statuses and statuses[-1].startswith("mobilenetv3_small_100: training (from scratch, 1 epoch at 64 px): "
                                                "epoch 1/1, batch 2/2, loss ")

    assert [row["model"] for row in rows] == models
    lite0, mobilenet = rows
    assert lite0["strategy"] == "fine-tuned from ImageNet weights"  # the built-in weights
    assert mobilenet["strategy"] == "from scratch"  # no MobileNetV3 weights offline
    for row in rows:
        assert 0.0 <= row["val_top1"] <= 1.0
        assert row["eager p50 ms"] > 0 and row["onnx fp32 p50 ms"] > 0
        assert row["fastest"] == "onnx fp32" and row["fastest_peak_rss_mb"] > 0 and row["fp32_file_mb"] > 1
        assert row["input_size"] == 64 and row["params_m"] > 1 and row["batch_size"] == 32  # 64 training photos
    assert lite0["published_imagenet_top1"] == 75.1 and "EfficientNet-Lite" in lite0["published_source"]

    saved = json.loads((out / "compare.json").read_text())
    assert saved["rows"] == rows
    with open(out / "compare.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == models
    assert float(table[0]["onnx fp32 p50 ms"]) == lite0["onnx fp32 p50 ms"]
    markdown = (out / "compare.md").read_text()
    assert "published, not measured" in markdown and "from scratch" in markdown
    assert "budget: 1 epoch at 64 px, batch 32;" in markdown
    assert "Ran as: onnx fp32: ONNX Runtime." in markdown and lite0["onnx fp32 ran as"] == "ONNX Runtime"
    assert f"{lite0['onnx fp32 p50 ms']:.2f}" in markdown
    # the shipped file's top-1 beside its checkpoint's on the same photos (the val column's may be on more)
    scored = json.loads((out / "tf_efficientnet_lite0" / "compare.json").read_text())["artifacts"]
    assert lite0["fastest_reference_top1"] == next(a["top1"] for a in scored if a["format"] == "safetensors")
    assert f"| {100 * lite0['fastest_top1']:.1f}% ({100 * lite0['fastest_reference_top1']:.1f}%) |" in markdown
    assert lite0["val_photos"] == 15 and "only 15 photos: one photo moves a top-1 by 6.7 points (val)" in markdown
    assert Image.open(out / "pareto.png").size[0] > 300
    assert "<svg" in (out / "pareto.svg").read_text()[:500]

    checkpoint = out / "tf_efficientnet_lite0" / "train" / "best.safetensors"
    before = checkpoint.stat().st_mtime_ns
    # a result saved before a recipe field existed trained with the field's default: it is still reused
    mobilenet_saved = out / "mobilenetv3_small_100" / "compare.json"
    record = json.loads(mobilenet_saved.read_text())
    del record["recipe"]["progressive_from"]
    mobilenet_saved.write_text(json.dumps(record))
    logged.clear()
    again = compare(models, str(flowers_subset), out, budget, log=logged.append)
    assert again == rows and checkpoint.stat().st_mtime_ns == before, "a measured model is not redone"
    assert sum("measured before" in line for line in logged) == 2
    # the command in a pipe (a CI log): each step is a line on stderr, where a terminal shows a status line
    capsys.readouterr()
    assert cli_run(["compare", *models, "--data", str(flowers_subset), "--out", str(out), "--epochs", "1",
                    "--img-size", "64", "-f", "onnx", "--no-int8", "--rounds", "3"]) == 0
    shown = capsys.readouterr()
    assert shown.err.count("measured before") == 2 and "| tf_efficientnet_lite0 |" in shown.out

    # --retime: the same trained and exported files, timed and scored again (training is not redone)
    onnx_file = out / "tf_efficientnet_lite0" / "best.onnx"
    exported = onnx_file.stat().st_mtime_ns
    retimed = compare(models, str(flowers_subset), out, budget, retime=True)
    assert checkpoint.stat().st_mtime_ns == before and onnx_file.stat().st_mtime_ns == exported
    assert [r["val_top1"] for r in retimed] == [r["val_top1"] for r in rows]
    assert all(r["onnx fp32 p50 ms"] > 0 for r in retimed)
    assert json.loads((out / "compare.json").read_text())["rows"] == retimed

    # a preset that changed since: the model it trains is measured again, the other one is kept
    from mvkit.train.recipe import FINETUNE
    monkeypatch.setitem(FINETUNE, "weight_decay", 0.02)
    logged.clear()
    compare(models, str(flowers_subset), out, budget, log=logged.append)
    assert checkpoint.stat().st_mtime_ns != before
    assert json.loads((out / "tf_efficientnet_lite0" / "compare.json").read_text())["recipe"]["weight_decay"] == 0.02
    assert [line for line in logged if "measured before" in line] == [
        "tf_efficientnet_lite0: measured before with another budget or training recipe; measuring again",
        f"mobilenetv3_small_100: measured before ({out / 'mobilenetv3_small_100' / 'compare.json'}); "
        "--redo measures again, --retime times again"]


def test_pareto_front_keeps_the_models_nothing_beats():
    rows = [{"model": "fast", "fastest_p50_ms": 2.0, "fastest_top1": 0.70},
            {"model": "accurate", "fastest_p50_ms": 9.0, "fastest_top1": 0.90},
            {"model": "dominated", "fastest_p50_ms": 9.5, "fastest_top1": 0.80},
            {"model": "middle", "fastest_p50_ms": 5.0, "fastest_top1": 0.85}]
    assert [r["model"] for r in pareto_front(rows)] == ["fast", "accurate", "middle"]


def test_compare_checks_before_training(flowers_subset, tmp_path, capsys):
    for args, message in ((["mobilevit_xxz"], "unknown model"), (["mobilevit_xxs", "mobilevit_xxs"], "named twice"),
                          (["mobilevit_xxs", "--teacher", str(tmp_path / "none.safetensors")], "--teacher"),
                          (["mobilevit_xxs", "--epochs", "0"], "--epochs must be at least 1, not 0"),
                          (["mobilevit_xxs", "--img-size", "5"], "--img-size must be at least 32, not 5")):
        assert cli_run(["compare", *args, "--data", str(flowers_subset), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(MvkitError, match="no such|does not exist|not found"):
        compare(["mobilevit_xxs"], str(tmp_path / "missing"), tmp_path / "out", CompareBudget())
