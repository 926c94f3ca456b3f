"""Core ML and ExecuTorch: exported from a real fine-tuned checkpoint and checked on real flower photos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from typer.testing import CliRunner

from mvkit.cli import app
from mvkit.errors import MvkitError
from mvkit.export import export
from mvkit.models import create_model, save_checkpoint, set_preprocess
from mvkit.verify import verify

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="ExecuTorch extra not installed")
needs_coreml = pytest.mark.skipif(importlib.util.find_spec("coremltools") is None,
                                  reason="Core ML extra not installed")


@needs_executorch
def test_executorch_fp32_agrees_with_the_checkpoint_on_real_photos(exported, flowers_subset):
    from mvkit.artifact import Artifact

    artifact = Artifact.load(exported["executorch"])  # made by `mvkit export -f all`
    assert artifact.path.suffix == ".pte" and artifact.path.stat().st_size > 1e6
    assert artifact.extra["delegate_pieces"] == 1 and artifact.extra["ops_outside_delegate"] == []
    report = verify(artifact.path, str(flowers_subset))
    assert report.passed and report.agreement == 1.0 and report.max_abs_prob_diff < 1e-4


@needs_executorch
def test_executorch_mobilevit_is_one_xnnpack_delegate(flowers_subset, tmp_path):
    """LayerNorm and timm's attention are rewritten in ops XNNPACK takes, so the whole MobileViT runs in one
    delegate (it was 49 pieces for MobileViT-S) with the same numbers. Untrained weights: the check is the
    graph and the agreement, not accuracy."""
    model = create_model("mobilevit_xxs", labels=["daisy", "dandelion", "rose", "sunflower", "tulip"])
    set_preprocess(model, size=64)
    save_checkpoint(model, tmp_path / "xxs.safetensors", source="mobilevit_xxs architecture, random init")
    artifact = export(tmp_path / "xxs.safetensors", "executorch")
    assert artifact.extra["delegate_pieces"] == 1 and artifact.extra["ops_outside_delegate"] == [], artifact.extra
    report = verify(artifact.path, str(flowers_subset))
    assert report.agreement == 1.0 and report.max_abs_prob_diff < 1e-5, report


@needs_executorch
def test_qat_graph_is_the_float_model_until_fake_quantization(flowers_checkpoint, flowers_subset):
    """QAT's graph, fake quantization off, computes the float model: BatchNorms are folded with their own eps
    (Lite0's is 1e-3; torchao's QAT conv+BN pattern assumes 1e-5, which moved Lite0's answers before training)."""
    import copy

    import torch
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant

    from mvkit.compress.calibration import calibration_batches
    from mvkit.compress.pt2e import prepare_int8_graph
    from mvkit.models import load_checkpoint
    from mvkit.runtime import load_predictor

    model = load_checkpoint(flowers_checkpoint)
    reference = copy.deepcopy(model).eval()
    batches = calibration_batches(load_predictor(flowers_checkpoint), str(flowers_subset), 16)
    pixels = torch.from_numpy(np.concatenate(batches))
    graph = prepare_int8_graph(model, "qat", batches)
    with torch.no_grad():
        expected = reference(pixels)  # logits: the training photos' probabilities are all near 0 or 1
        graph.apply(disable_fake_quant)
        unquantized = graph(pixels)
        graph.apply(enable_fake_quant)
        quantized = graph(pixels)
    scale = expected.abs().max()
    assert (unquantized - expected).abs().max() < 1e-4 * scale, (unquantized - expected).abs().max() / scale
    assert (quantized - expected).abs().max() > 1e-2 * scale  # the fake quantizers are in the graph and on


@needs_coreml
def test_coreml_package_is_a_vision_classifier_with_enumerated_sizes(flowers_checkpoint, flowers_subset):
    from mvkit.coreml.package import read_package

    artifact = export(flowers_checkpoint, "coreml", sizes=[96, 192, 256])
    summary = read_package(artifact.path)
    assert summary.input_kind == "imageType" and summary.color_space == "RGB"
    assert summary.sizes == [96, 192, 256]
    assert summary.labels == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert summary.outputs == ["classLabel", "classLabel_probs"] and summary.op_counts["softmax"] == 1
    # Lite0's normalisation (mean 0.5, std 0.5 on every channel) is folded into the ImageType exactly
    assert summary.image_scale == pytest.approx(1 / 127.5) and summary.image_bias == pytest.approx([-1.0] * 3)
    assert summary.weight_dtypes.get("FLOAT16", 0) > 10 and not summary.compression_ops
    shown = CliRunner().invoke(app, ["inspect", str(artifact.path)], terminal_width=200).output
    assert "input  image: image RGB [1, 3, 96, 96], sides 96, 192, 256" in shown, shown
    report = verify(artifact.path, str(flowers_subset))  # fp16, run by the numpy interpreter off macOS
    assert report.passed and report.problems == [] and report.agreement == 1.0, report
    assert 1e-5 < report.max_abs_prob_diff < 2e-2  # fp16 rounding is visible, and small


@needs_coreml
def test_coreml_fp32_matches_pytorch_closely(flowers_checkpoint, flowers_subset):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(flowers_checkpoint), "-f", "coreml", "--precision", "fp32", "--sizes", "96"])
    assert result.exit_code == 0, result.output
    report = verify(flowers_checkpoint.with_name("flowers.fp32.mlpackage"), str(flowers_subset))
    assert report.agreement == 1.0 and report.max_abs_prob_diff < 1e-4, report


@needs_coreml
def test_coreml_mixed_precision_keeps_the_stem_in_fp32(flowers_checkpoint, flowers_subset):
    from mvkit.coreml.interpreter import Program
    from mvkit.export.coreml import FP32_LEADING_CONVS

    fp16 = verify(export(flowers_checkpoint, "coreml", sizes=[96]).path, str(flowers_subset))
    mixed = export(flowers_checkpoint, "coreml", sizes=[96], precision="mixed")
    assert mixed.path.name == "flowers.mixed.mlpackage" and mixed.extra["precision"] == "mixed"
    convs = [op for op in Program(mixed.path).block.operations if op.type == "conv"]
    float32, float16 = 11, 10  # MIL DataType numbers
    dtypes = [op.outputs[0].type.tensorType.dataType for op in convs]
    assert dtypes[:FP32_LEADING_CONVS] == [float32] * FP32_LEADING_CONVS
    assert set(dtypes[FP32_LEADING_CONVS:]) == {float16}
    report = verify(mixed.path, str(flowers_subset))
    assert report.passed and report.agreement == 1.0, report
    # the stem carries most of the fp16 error: without it the probabilities move less
    assert report.mean_abs_prob_diff < fp16.mean_abs_prob_diff, (report, fp16)


@needs_coreml
def test_verify_on_macos_cross_checks_the_interpreter_against_core_ml(flowers_checkpoint, flowers_subset, monkeypatch):
    """No Mac here: Core ML's predict is stood in for by the interpreter fed the PIL image Core ML would get.
    What this checks is the cross-check's plumbing: both sides see the same 8-bit pixels (float pixels would
    move the probabilities), and the report carries the comparison."""
    import coremltools as ct
    from PIL import Image

    import mvkit.runtime.coreml_runtime as coreml_runtime
    from mvkit.coreml.interpreter import Program

    package = export(flowers_checkpoint, "coreml", sizes=[96], precision="fp32").path
    program = Program(package)

    def core_ml_stand_in(self, feeds):
        image = feeds["image"]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None]
        labels = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
        return {"classLabel_probs": dict(zip(labels, program.probabilities(pixels)[0].tolist()))}

    monkeypatch.setattr(coreml_runtime.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(ct.models.MLModel, "predict", core_ml_stand_in)
    report = verify(package, str(flowers_subset))
    assert report.runtime == "Core ML"
    check = report.interpreter_vs_coreml
    assert check["agreement"] == 1.0 and check["max_abs_prob_diff"] == 0.0, check
    assert report.passed and report.max_abs_prob_diff < 1e-2  # 8-bit pixels vs PyTorch's float pixels


@needs_coreml
def test_coreml_compressed_weights_decompress_exactly(flowers_checkpoint, flowers_subset, tmp_path):
    import coremltools as ct

    from mvkit.coreml.interpreter import Program
    from mvkit.coreml.package import read_package
    from mvkit.runtime import load_predictor

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(flowers_checkpoint), "-f", "coreml", "--compress", "palettize4",
                                 "--sizes", "96"])
    assert result.exit_code == 0, result.output
    path = flowers_checkpoint.with_name("flowers.palettize4.mlpackage")
    summary = read_package(path)
    assert summary.compression_ops.get("constexpr_lut_to_dense", 0) > 10 and summary.sizes == [96]
    # coremltools' own decompression is the reference for the interpreter's constexpr ops
    decompressed = tmp_path / "decompressed.mlpackage"
    ct.optimize.coreml.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True)).save(str(decompressed))
    predictor = load_predictor(path)
    from PIL import Image

    photos = [Image.open(p).convert("RGB") for p in sorted(flowers_subset.rglob("*.jpg"))[:4]]
    normalised = predictor.prepare(photos)
    ours = predictor.run(normalised)
    reference = Program(decompressed).probabilities((normalised * 0.5 + 0.5) * 255.0)
    assert np.array_equal(ours, reference)
    # 4-bit per-tensor palettization of this model changes most answers (measured: 4 of 15 kept): verify says so
    result = runner.invoke(app, ["verify", str(path), "--data", str(flowers_subset)])
    assert result.exit_code == 1 and "FAIL" in result.output and "interpreter" in result.output, result.output


@needs_coreml
def test_mobilevit_package_runs_in_the_interpreter_like_pytorch(tmp_path, photos, monkeypatch):
    """MobileViT's ops (layer_norm, matmul, split, concat, transpose, silu) against PyTorch, fp32."""
    import torch
    from PIL import Image

    from mvkit.coreml.interpreter import Program
    from mvkit.export.coreml import export_coreml
    from mvkit.models import preprocess_of

    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", labels=[f"c{i}" for i in range(10)]).eval()
    set_preprocess(model, size=64, crop_pct=1.0)
    export_coreml(model, tmp_path / "xxs.mlpackage", sizes=[64], precision="fp32")
    program = Program(tmp_path / "xxs.mlpackage")
    transform = preprocess_of(model).eval_transform()
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos.values()])
    with torch.no_grad():
        expected = model(batch).softmax(-1).numpy()
    got = program.probabilities(batch.numpy() * 255.0)  # MobileViT: mean 0, std 1
    assert np.abs(got - expected).max() < 1e-5
    # fp16 (the default) converts too: Core ML refuses tensors of rank > 5 there, which a 6-d unfold had made
    export_coreml(model, tmp_path / "xxs16.mlpackage", sizes=[64])
    half = Program(tmp_path / "xxs16.mlpackage").probabilities(batch.numpy() * 255.0)
    assert np.abs(half - expected).max() < 1e-2 and (half.argmax(1) == expected.argmax(1)).all()
    # an op the interpreter does not know is named with its output (MIL location) and opset
    from mvkit.coreml import ops
    from mvkit.coreml.ops.common import UnsupportedOp

    monkeypatch.delitem(ops.OPS, "layer_norm")
    with pytest.raises(UnsupportedOp, match=r"op `layer_norm` \(producing `\w+`, opset CoreML\d\) is not supported"):
        program.probabilities(batch.numpy() * 255.0)


@needs_coreml
def test_per_channel_std_is_applied_inside_the_program(tmp_path):
    from mvkit.coreml.package import read_package
    model = create_model("mobilenetv3_small_050", labels=["a", "b"])  # ImageNet mean/std: three different stds
    set_preprocess(model, size=64)
    checkpoint = save_checkpoint(model, tmp_path / "small.safetensors").path
    artifact = export(checkpoint, "coreml", sizes=[64])
    summary = read_package(artifact.path)
    assert artifact.extra["normalisation"] == "in program"
    assert summary.image_scale == pytest.approx(1 / 255)


def photo_batch(photos: dict, size: int):
    """The real photos as one [N, 3, size, size] float batch in [0, 1] (resized, no normalisation)."""
    import torch
    from PIL import Image

    return torch.stack([torch.from_numpy(np.asarray(Image.open(path).convert("RGB").resize((size, size)), np.float32) / 255)
                        .permute(2, 0, 1) for path in photos.values()])


def test_export_ready_mobilevit_computes_what_timm_computes(photos):
    """ready_for_export rewrites MobileViT's unfold/fold (channels-last) and attention (matmul + softmax): the
    same numbers, at a size the patches tile (64: maps 8, 4, 2) and one where timm resizes the map (96: 3x3)."""
    import torch

    from mvkit.export.graph import _mobilevit_forward_channels_last, ready_for_export

    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", labels=[f"c{i}" for i in range(10)]).eval()
    for size in (64, 96):
        ready = ready_for_export(model, size)
        rewritten = [m for m in ready.modules() if getattr(m.forward, "__func__", None) is _mobilevit_forward_channels_last]
        assert len(rewritten) == 3
        batch = photo_batch(photos, size)
        with torch.no_grad():
            assert torch.allclose(ready(batch), model(batch), atol=1e-5, rtol=0)


def test_openvino_attention_with_separate_qkv_computes_what_timm_computes(photos):
    """ready_for_openvino writes timm's attention with q, k and v from three layers and rank-4 permutes: the same
    numbers on real photos, in PyTorch and in the converted f32 IR, whose attention has no rank-5 transpose left."""
    ov = pytest.importorskip("openvino", reason="OpenVINO extra not installed")
    import torch

    from mvkit.export.graph import ready_for_export
    from mvkit.export.openvino import SeparateQKVAttention, ready_for_openvino

    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", labels=[f"c{i}" for i in range(10)]).eval()
    size = 64
    ready = ready_for_openvino(model, size)
    assert sum(isinstance(m, SeparateQKVAttention) for m in ready.modules()) == 9  # XXS: 2 + 4 + 3 layers
    batch = photo_batch(photos, size)
    with torch.no_grad():
        expected = model(batch)
        assert torch.allclose(ready(batch), expected, atol=1e-5, rtol=0)
        converted = ov.convert_model(ready, example_input=batch)
        one_qkv_layer = ov.convert_model(ready_for_export(model, size), example_input=batch)

    def attention_transpose_ranks(ov_model) -> set[int]:
        return {len(op.get_output_partial_shape(0)) for op in ov_model.get_ordered_ops()
                if op.get_type_name() == "Transpose" and ".attn" in op.get_friendly_name()}
    assert attention_transpose_ranks(converted) == {4} and 5 in attention_transpose_ranks(one_qkv_layer)
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.allclose(compiled(batch.numpy())[0], expected.numpy(), atol=1e-4)


def test_mobilevit_sizes_that_cannot_share_a_program_are_refused_with_a_fix():
    from mvkit.export.coreml import choose_sizes

    model = create_model("mobilevit_xxs", labels=["a", "b"])
    assert choose_sizes(model, None)[0] == [192, 256]  # 224 gives a 7x7 map that MobileViT resizes
    with pytest.raises(MvkitError, match=r"multiples of 64.*--sizes 192,256"):
        choose_sizes(model, [192, 224, 256])
    assert choose_sizes(model, [224]) == ([224], None)
    # a model trained at 64 px (a 1x1 map at the last stage, which torch.export fixes) or at a side that is not a
    # multiple of 64 is exported at its own size only, never at a default it was not trained at
    for own in (64, 160):
        set_preprocess(model, size=own)
        sizes, note = choose_sizes(model, None)
        assert sizes == [own] and f"size {own} only" in note
    with pytest.raises(MvkitError, match=r"from 128 up; 64 is not.*--sizes 128,192"):
        choose_sizes(model, [64, 128, 192])
    # no default size above the one the model trained at: a 224 px model gets 192 and 224, a 128 px one 128
    lite0 = create_model("tf_efficientnet_lite0", labels=["a", "b"])
    sizes, note = choose_sizes(lite0, None)
    assert sizes == [192, 224] and "256 above the 224 px it was trained at" in note
    set_preprocess(lite0, size=128)
    assert choose_sizes(lite0, None)[0] == [128]
    assert choose_sizes(lite0, [128, 256]) == ([128, 256], None)  # asked for: kept
    # a ViT's position embeddings are built for one size: the default 192 and 224 failed in torch.export
    deit = create_model("deit_tiny", labels=["a", "b"])
    sizes, note = choose_sizes(deit, None)
    assert sizes == [224] and "takes one input size" in note
    with pytest.raises(MvkitError, match=r"takes one input size, 224 px"):
        choose_sizes(deit, [192, 224])


@needs_coreml
def test_an_unsupported_operator_is_named_with_its_layer(tmp_path):
    model = create_model("ghostnet_100", labels=["a", "b"])  # torch.export emits `alias`, which coremltools lacks
    set_preprocess(model, size=64)
    checkpoint = save_checkpoint(model, tmp_path / "ghost.safetensors").path
    with pytest.raises(MvkitError, match=r"operator alias in layer blocks\.0\.0\.ghost1 \(GhostModule\)"):
        export(checkpoint, "coreml", sizes=[64])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ghost.safetensors", "ghost.safetensors.mvkit.json"]


def test_litert_export_agrees_with_the_checkpoint(flowers_checkpoint, flowers_subset):
    pytest.importorskip("litert_torch", reason="LiteRT extra not installed (optional, conflicts with coremltools)")
    artifact = export(flowers_checkpoint, "litert")
    assert artifact.path.suffix == ".tflite"
    report = verify(artifact.path, str(flowers_subset))
    assert report.passed and report.agreement == 1.0 and report.max_abs_prob_diff < 1e-4


def test_litert_int8_is_calibrated_on_real_photos_and_verified(flowers_checkpoint, flowers_subset):
    pytest.importorskip("litert_torch", reason="LiteRT extra not installed (optional, conflicts with coremltools)")
    from mvkit.compress.litert_int8 import quantize_litert

    fp32 = export(flowers_checkpoint, "litert")
    int8 = quantize_litert(flowers_checkpoint, str(flowers_subset), count=32)
    assert int8.path.name == "flowers.int8.tflite" and int8.extra["calibration_images"] == 32
    assert int8.path.stat().st_size < fp32.path.stat().st_size / 2.5
    report = verify(int8.path, str(flowers_subset), threshold=0.0)
    assert report.agreement >= 0.8 and report.max_abs_prob_diff > 1e-4, report  # int8 really changed the numbers


def test_written_out_silu_is_the_same_math(photos):
    """The LiteRT int8 path writes each SiLU as x * sigmoid(x) so litert-torch's quantizer can quantize it."""
    import torch
    from PIL import Image
    from torch import nn

    from mvkit.compress.litert_int8 import SigmoidTimesInput, write_out_silu
    from mvkit.export.graph import ready_for_export
    from mvkit.models import preprocess_of

    model = create_model("mobilevit_xxs", labels=["a", "b"])
    set_preprocess(model, size=64)
    silu_count = sum(isinstance(m, nn.SiLU) for m in model.modules())
    ready = ready_for_export(model, 64)
    written = write_out_silu(ready_for_export(model, 64))
    assert silu_count > 30 and not any(isinstance(m, nn.SiLU) for m in written.modules())
    assert sum(isinstance(m, SigmoidTimesInput) for m in written.modules()) == silu_count
    transform = preprocess_of(model).eval_transform()
    batch = torch.stack([transform(Image.open(photos[name]).convert("RGB")) for name in ("coffee", "chelsea")])
    with torch.no_grad():
        torch.testing.assert_close(written(batch), ready(batch), rtol=1e-5, atol=1e-5)


def test_export_ready_activations_run_out_of_place_with_the_same_numbers(lite0, photos):
    """ready_for_export turns timm's in-place activations (EfficientNet-Lite0's ReLU6) out of place, which
    torch.export captures faster: the pretrained model gives the same logits on real photos, bit for bit."""
    import torch

    from mvkit.export.graph import ready_for_export

    in_place = [name for name, m in lite0.named_modules() if getattr(m, "inplace", None) is True]
    ready = ready_for_export(lite0, 224)
    assert len(in_place) > 15 and not any(getattr(m, "inplace", None) is True for m in ready.modules())
    assert all(getattr(lite0.get_submodule(name), "inplace") is True for name in in_place), "the source is untouched"
    batch = photo_batch(photos, 224)
    with torch.no_grad():
        assert torch.equal(ready(batch), lite0.eval()(batch))


def test_litert_int8_runs_mobilevit_silu_in_int8(flowers_subset, tmp_path):
    """Every SiLU after a quantized conv is an int8 LOGISTIC in the .tflite (only the float first conv's stays
    float). Untrained MobileViT-XXS: the check is the graph."""
    pytest.importorskip("litert_torch", reason="LiteRT extra not installed (optional, conflicts with coremltools)")
    import collections

    from ai_edge_litert.interpreter import Interpreter
    from torch import nn

    from mvkit.compress.litert_int8 import quantize_litert

    model = create_model("mobilevit_xxs", labels=["daisy", "dandelion", "rose", "sunflower", "tulip"])
    set_preprocess(model, size=64)
    save_checkpoint(model, tmp_path / "xxs.safetensors", source="mobilevit_xxs architecture, random init")
    int8 = quantize_litert(tmp_path / "xxs.safetensors", str(flowers_subset), count=8)
    interpreter = Interpreter(model_path=str(int8.path))
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in interpreter.get_tensor_details()}
    logistic = collections.Counter(dtypes[op["outputs"][0]].__name__ for op in interpreter._get_ops_details()
                                   if op["op_name"] == "LOGISTIC")
    silu_count = sum(isinstance(m, nn.SiLU) for m in model.modules())
    assert logistic == {"int8": silu_count - 1, "float32": 1}, logistic


def test_openvino_ir_describes_itself_and_fp32_matches_the_checkpoint(exported, flowers_subset, tmp_path):
    """The IR carries labels and Preprocess in its own runtime info (read back by OpenVINO itself); fp32 is exact,
    the default precision says what the CPU plugin ran (bf16 where the CPU has it) and stays close."""
    ov = pytest.importorskip("openvino", reason="OpenVINO extra not installed")
    import json

    from mvkit.artifact import Artifact
    from mvkit.preprocess import Preprocess

    checkpoint = Artifact.load(exported["safetensors"])
    ir = ov.Core().read_model(str(exported["openvino"] / "model.xml"))
    assert json.loads(ir.get_rt_info(["mvkit", "labels"]).value) == checkpoint.labels
    written = json.loads(ir.get_rt_info(["mvkit", "preprocess"]).value)
    assert Preprocess.from_dict(written) == checkpoint.preprocess and written["channel_order"] == "RGB"
    assert ir.get_rt_info(["mvkit", "output"]).value == "logits"
    assert ir.inputs[0].get_partial_shape()[0].is_dynamic  # any batch

    fp32 = export(exported["safetensors"], "openvino", tmp_path, precision="fp32")
    assert fp32.path.name == "flowers.fp32_openvino"
    report = verify(fp32.path, str(flowers_subset))
    assert report.runtime == "OpenVINO CPU plugin, f32 inference"
    assert report.agreement == 1.0 and report.max_abs_prob_diff < 1e-4, report
    default = verify(exported["openvino"], str(flowers_subset))
    assert default.runtime.startswith("OpenVINO CPU plugin, ") and default.agreement >= 0.95, default

    def kept_f32(path):  # the ops the CPU plugin must run in f32 whatever its inference precision
        return [op.get_friendly_name() for op in ov.Core().read_model(str(path / "model.xml")).get_ordered_ops()
                if any(key.startswith("DisablePrecisionConversion") for key in op.get_rt_info().keys())]

    # the leading convolutions stay f32 in the default IR (the marks outlive the metadata's embedding), none in fp32
    kept = kept_f32(exported["openvino"])
    assert kept and kept == Artifact.load(exported["openvino"]).extra["f32_convs"], kept
    assert kept_f32(fp32.path) == [] and Artifact.load(fp32.path).extra["f32_convs"] == []
    if "bf16" in default.runtime:
        assert default.runtime.endswith(f"bf16 inference ({len(kept)} leading convs in f32)"), default.runtime
