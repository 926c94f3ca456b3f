"""Export to ONNX and TorchScript, then verify each in its own runtime against the checkpoint on real photos."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mvkit.cli import app
from mvkit.errors import MvkitError
from mvkit.export import export
from mvkit.formats import FORMATS
from mvkit.models import create_model, save_checkpoint, set_preprocess
from mvkit.runtime import load_predictor
from mvkit.verify import verify

pytest.importorskip("onnxruntime")
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(flowers_checkpoint) -> Path:
    return flowers_checkpoint


@pytest.fixture(scope="module")
def onnx_artifact(checkpoint):
    return export(checkpoint, "onnx")


def test_onnx_export_writes_file_and_sidecar_and_agrees_on_real_photos(onnx_artifact, checkpoint, flowers_subset):
    assert onnx_artifact.path == checkpoint.with_name("flowers.onnx") and onnx_artifact.path.stat().st_size > 1e6
    assert onnx_artifact.labels == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert onnx_artifact.source == str(checkpoint) and onnx_artifact.preprocess.size == 96
    assert not list(checkpoint.parent.glob(".*.partial*"))
    report = verify(onnx_artifact.path, str(flowers_subset), threshold=0.99)
    assert report.passed and report.agreement == 1.0 and report.count == 15  # 3 val photos per class
    assert report.max_abs_prob_diff < 1e-4
    assert report.artifact_top1 == pytest.approx(report.reference_top1)


def test_onnx_batch_is_dynamic(onnx_artifact, photos):
    from PIL import Image

    predictor = load_predictor(onnx_artifact.path)
    images = [Image.open(p).convert("RGB") for p in photos.values()]
    single = predictor.predict_images(images[:1])
    both = predictor.predict_images(images)
    assert both.shape == (2, 5) and np.allclose(both[0], single[0], atol=1e-5)
    assert np.allclose(both.sum(axis=1), 1.0, atol=1e-5)


def test_torchscript_export_verifies(checkpoint, flowers_subset):
    artifact = export(checkpoint, "torchscript")
    report = verify(artifact.path, str(flowers_subset))
    assert report.passed and report.max_abs_prob_diff < 1e-5


def test_predict_cli_accepts_an_onnx_artifact(onnx_artifact, flowers_subset):
    photo = next((flowers_subset / "sunflower").iterdir())
    result = runner.invoke(app, ["predict", str(onnx_artifact.path), str(photo), "--json", "-k", "2"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["predictions"][0]["top"]
    assert len(top) == 2 and top[0]["label"] in onnx_artifact.labels


def test_verify_fails_below_threshold_against_another_model(onnx_artifact, flowers_subset, tmp_path):
    other = create_model("tf_efficientnet_lite0", labels=onnx_artifact.labels)  # random head and body
    set_preprocess(other, size=96, crop_pct=1.0)
    save_checkpoint(other, tmp_path / "other.safetensors")
    result = runner.invoke(app, ["verify", str(onnx_artifact.path), "--data", str(flowers_subset),
                                 "--reference", str(tmp_path / "other.safetensors"), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["agreement"] < 0.9 and report["flips"] == round((1 - report["agreement"]) * report["count"])
    assert 0 <= report["largest_flipped_lead"] <= 1


def test_verify_refuses_a_checkpoint_trained_again_since_the_export(checkpoint, flowers_subset, tmp_path):
    """A run folder's best.safetensors overwritten by a second run: the file records the sha256 of the checkpoint
    it came from, so verify says so instead of failing the export for the new weights."""
    from mvkit.cli import run

    run_folder = tmp_path / "run"
    run_folder.mkdir()
    for suffix in ("", ".mvkit.json"):
        (run_folder / f"best.safetensors{suffix}").write_bytes(Path(f"{checkpoint}{suffix}").read_bytes())
    exported = export(run_folder / "best.safetensors", "onnx").path
    retrained = create_model("tf_efficientnet_lite0", labels=load_predictor(exported).labels)
    set_preprocess(retrained, size=96, crop_pct=1.0)
    save_checkpoint(retrained, run_folder / "best.safetensors")
    assert run(["verify", str(exported), "--data", str(flowers_subset), "--limit", "10"]) == 2
    with pytest.raises(MvkitError, match=r"best.safetensors has changed since .*best.onnx was exported from it.*"
                                         r"--reference"):
        verify(exported, flowers_subset, limit=10)
    # asked for by name, the checkpoint as it is now is the reference
    assert verify(exported, flowers_subset, limit=10, reference=run_folder / "best.safetensors").count == 10


def test_verify_on_too_few_photos_for_its_threshold_says_so(onnx_artifact, flowers_subset):
    """A pass on 15 or so photos cannot see the 1% change the default threshold is about."""
    few = runner.invoke(app, ["verify", str(onnx_artifact.path), "--data", str(flowers_subset)],
                        terminal_width=200)
    assert few.exit_code == 0 and re.search(r"note: only 1\d photos; a 1% change shows on 100 or more", few.output)
    enough = runner.invoke(app, ["verify", str(onnx_artifact.path), "--data", str(flowers_subset),
                                 "--threshold", "0.9"], terminal_width=200)
    assert enough.exit_code == 0 and "note:" not in enough.output, enough.output


def test_verify_names_flips_that_were_near_ties():
    from mvkit.verify import flipped_leads

    reference = np.array([[0.50, 0.49, 0.01], [0.90, 0.05, 0.05], [0.30, 0.45, 0.25], [0.2, 0.2, 0.6]])
    artifact = np.array([[0.49, 0.50, 0.01], [0.89, 0.06, 0.05], [0.46, 0.30, 0.24], [0.2, 0.2, 0.6]])
    assert flipped_leads(artifact, reference) == {"flips": 2, "largest_flipped_lead": pytest.approx(0.15)}
    assert flipped_leads(reference, reference) == {"flips": 0, "largest_flipped_lead": None}


def broken_onnx_export(model, path):
    """An exporter that writes half a file, then fails as a converter does."""
    from mvkit.export.graph import conversion_error

    path.write_bytes(b"half a file")
    raise conversion_error("onnx", "test", RuntimeError("unsupported operator aten::weird in blocks.3"), None, "")


def test_a_failed_export_leaves_nothing_behind(checkpoint, monkeypatch):
    import dataclasses

    monkeypatch.setitem(FORMATS, "onnx", dataclasses.replace(
        FORMATS["onnx"], exporter=f"{__name__}:broken_onnx_export"))
    out = checkpoint.parent / "failed"
    with pytest.raises(MvkitError, match="aten::weird"):
        export(checkpoint, "onnx", out_dir=out)
    assert list(out.iterdir()) == []
    with pytest.raises(MvkitError, match="unknown format"):
        export(checkpoint, "tflite-but-misspelled")
    with pytest.raises(MvkitError, match="onnx export does not take --precision"):
        export(checkpoint, "onnx", precision="fp32")


def test_bench_compares_artifacts_in_one_table(checkpoint, onnx_artifact, photos, flowers_subset, tmp_path):
    from PIL import Image

    from mvkit.bench import bench

    images = [Image.open(p).convert("RGB") for p in photos.values()]
    rows = bench([checkpoint, onnx_artifact.path], images, rounds=4, batch=2, measure_memory=True)
    assert [r.format for r in rows] == ["safetensors", "onnx"]
    for row in rows:
        assert 0 < row.latency_p50_ms <= row.latency_p90_ms and row.throughput_img_s > 0
        assert row.peak_rss_mb > 50  # a fresh Python process with torch loaded
    assert rows[0].params_m == pytest.approx(3.38, abs=0.01) and rows[1].params_m == pytest.approx(rows[0].params_m)
    assert rows[1].file_mb > 10

    result = runner.invoke(app, ["bench", str(checkpoint), str(onnx_artifact.path), "--data", str(flowers_subset),
                                 "--limit", "10", "--rounds", "3", "--batch", "2", "--no-memory", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved[0]["agreement"] == 1.0 and saved[1]["agreement"] == 1.0
    assert saved[1]["top1"] == pytest.approx(saved[0]["top1"])
    assert "| flowers.onnx | onnx | verified |" in (tmp_path / "bench.md").read_text()


def test_static_int8_onnx_is_calibrated_on_real_photos_and_verified(onnx_artifact, flowers_subset):
    import onnx

    from mvkit.compress.onnx_int8 import quantize_onnx_static

    int8 = quantize_onnx_static(onnx_artifact.path, str(flowers_subset), count=40)
    assert int8.path.name == "flowers.int8.onnx" and int8.extra["calibration_images"] == 40
    assert int8.extra["calibration"] == "percentile"
    assert int8.path.stat().st_size < onnx_artifact.path.stat().st_size / 2.5
    ops = {node.op_type for node in onnx.load(str(int8.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "ConvInteger" not in ops
    report = verify(int8.path, str(flowers_subset), threshold=0.0)
    assert report.agreement >= 0.8 and report.max_abs_prob_diff > 1e-4  # int8 really changed the numbers


def test_calibration_on_fewer_photos_than_asked_says_so(onnx_artifact, flowers_subset, caplog, tmp_path):
    from mvkit.compress.onnx_int8 import quantize_onnx_static
    from mvkit.data import load_data

    train = len(load_data(str(flowers_subset)).train)  # 80 photos, about 64 of them for training
    with caplog.at_level("WARNING", logger="mvkit"):
        int8 = quantize_onnx_static(onnx_artifact.path, str(flowers_subset), count=1000,
                                    out=tmp_path / "few.int8.onnx")
    assert int8.extra["calibration_images"] == train < 1000
    assert f"calibration: {train} training photos" in caplog.text and "fewer than the 1000 asked" in caplog.text


def test_quantize_without_calibration_data_fails_cleanly(onnx_artifact, tmp_path):
    from mvkit.compress.onnx_int8 import quantize_onnx_static

    before = sorted(p.name for p in onnx_artifact.path.parent.iterdir())
    with pytest.raises(MvkitError, match="calibration data"):
        quantize_onnx_static(onnx_artifact.path, str(tmp_path / "missing"), count=8)
    with pytest.raises(MvkitError, match="--calibration must be percentile or minmax, not 'entropy'"):
        quantize_onnx_static(onnx_artifact.path, str(tmp_path / "missing"), count=8, calibration="entropy")
    assert sorted(p.name for p in onnx_artifact.path.parent.iterdir()) == before


def test_dynamic_quantization_reports_its_small_reach(checkpoint, flowers_subset):
    from mvkit.compress.dynamic import quantize_dynamic_linear

    artifact = quantize_dynamic_linear(checkpoint)
    summary = artifact.extra["note"]
    assert "1 Linear layers" in summary and "use --method ptq" in summary  # only the head of a conv net
    assert artifact.extra["linear_weight_share"] < 0.01
    report = verify(artifact.path, str(flowers_subset), threshold=0.0)
    assert report.agreement >= 0.9


def test_int8_onnx_mobilevit_keeps_attention_softmax_float(flowers_subset, tmp_path):
    """In the graph ONNX Runtime actually runs: convolutions and projections int8, but the attention softmax
    float, because the MatMul after it stays float (ORT's QLinearSoftmax was its slowest int8 kernel here).
    The transformer's Linears are one QGemm each, bias inside (exported as Gemm, not MatMul + Add). The layer
    norms keep float scale and bias, not int8 ones dequantized on every run. The model is an untrained
    MobileViT-XXS: this checks the graph and the float file's agreement."""
    import collections

    import onnx
    import onnxruntime as ort

    from mvkit.compress.onnx_int8 import quantize_onnx_static

    model = create_model("mobilevit_xxs", labels=["daisy", "dandelion", "rose", "sunflower", "tulip"])
    set_preprocess(model, size=64)
    save_checkpoint(model, tmp_path / "xxs.safetensors", source="mobilevit_xxs architecture, random init")
    fp32 = export(tmp_path / "xxs.safetensors", "onnx").path
    report = verify(fp32, str(flowers_subset))
    assert report.agreement == 1.0 and report.max_abs_prob_diff < 1e-5, report
    int8 = quantize_onnx_static(fp32, str(flowers_subset), count=8, calibration="minmax")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    ort.InferenceSession(str(int8.path), options, providers=["CPUExecutionProvider"])
    as_run = onnx.load(options.optimized_model_filepath).graph
    ops = collections.Counter(node.op_type for node in as_run.node)
    assert ops["QLinearConv"] > 20, ops
    assert ops["QGemm"] == 36 and ops["QLinearMatMul"] == 9, ops  # 4 Linears and q @ k per transformer layer
    assert ops["Softmax"] == 9 and ops["QLinearSoftmax"] == 0, ops  # one per transformer layer
    float_weights = {tensor.name for tensor in as_run.initializer if tensor.data_type == onnx.TensorProto.FLOAT}
    norms = [node for node in as_run.node if node.op_type == "LayerNormalization"]
    assert len(norms) == 21 and all(set(node.input[1:]) <= float_weights for node in norms)
