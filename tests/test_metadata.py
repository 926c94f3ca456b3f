"""Self-describing artifacts: every exported file carries mvkit's record (labels, Preprocess, ...) in its format's own
convention, read back by that format's own tools; without its sidecar the file still predicts exactly as with it;
`mvkit inspect` shows what the file says about itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvkit.artifact import Artifact, sidecar_path
from mvkit.formats import FORMATS, available_formats

CLI = [sys.executable, "-m", "mvkit.cli"]


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> dict[str, Path]:
    """The built-in ImageNet-pretrained EfficientNet-Lite0 exported by `mvkit export -f all` (224 px)."""
    folder = tmp_path_factory.mktemp("described")
    shown = subprocess.run([*CLI, "export", "tf_efficientnet_lite0", "--pretrained", "-f", "all", "--out",
                            str(folder)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    return {fmt: folder / f"tf_efficientnet_lite0{FORMATS[fmt].suffix}" for fmt in available_formats()}


def top1(artifact: Path, photo: Path) -> tuple[str, float]:
    from mvkit.predict import predict_files
    from mvkit.runtime import load_predictor

    predictions, skipped = predict_files(load_predictor(artifact), [photo], topk=1)
    assert not skipped
    return predictions[0].top[0]


def without_sidecar(artifact: Path, folder: Path) -> Path:
    """A copy of the artifact file alone, as an app would ship it."""
    copy = folder / artifact.name
    (shutil.copytree if artifact.is_dir() else shutil.copy2)(artifact, copy)
    assert not sidecar_path(copy).exists()
    return copy


def test_every_format_predicts_the_coffee_photo_without_its_sidecar(described, photos, tmp_path):
    for fmt, artifact in described.items():
        label, probability = top1(artifact, photos["coffee"])
        alone_label, alone_probability = top1(without_sidecar(artifact, tmp_path), photos["coffee"])
        assert label == alone_label == "espresso", fmt
        assert alone_probability == pytest.approx(probability, abs=1e-6), fmt
    shown = subprocess.run([*CLI, "predict", str(tmp_path / described["onnx"].name), str(photos["coffee"]), "--json",
                            "--topk", "1"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["predictions"][0]["top"][0]["label"] == "espresso"


def test_each_format_s_own_tools_read_the_record(described, lite0):
    from mvkit.models import labels_of, preprocess_of

    labels, preprocess = labels_of(lite0), preprocess_of(lite0).to_dict()
    found = {}
    if "onnx" in described:
        import onnx

        found["onnx"] = {p.key: p.value for p in onnx.load(str(described["onnx"])).metadata_props}
    if "coreml" in described:
        import coremltools as ct

        found["coreml"] = dict(ct.models.MLModel(str(described["coreml"]), skip_model_load=True).user_defined_metadata)
    if "executorch" in described:
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(described["executorch"])
        assert {"labels", "preprocess", "architecture"} <= set(program.method_names)
        found["executorch"] = {name: program.load_method(name).execute([])[0] for name in ("labels", "preprocess")}
    if "openvino" in described:
        import openvino as ov

        ir = ov.Core().read_model(str(described["openvino"] / "model.xml"))
        found["openvino"] = {key: ir.get_rt_info(["mvkit", key]).astype(str) for key in ("labels", "preprocess")}
    if "torchscript" in described:
        import torch

        files = {"labels": "", "preprocess": ""}
        torch.jit.load(str(described["torchscript"]), _extra_files=files)
        found["torchscript"] = {key: value.decode() for key, value in files.items()}
    if "litert" in described:
        import zipfile

        with zipfile.ZipFile(described["litert"]) as bundle:
            found["litert"] = json.loads(bundle.read("mvkit.json"))
            assert bundle.read("labels.txt").decode().splitlines() == labels
    assert set(found) == set(described), "a format was not read back"
    for fmt, record in found.items():
        assert json.loads(record["labels"]) == labels, fmt
        written = json.loads(record["preprocess"])
        assert {key: written[key] for key in preprocess} == preprocess, fmt
        assert written["channel_order"] == "RGB", fmt


def test_inspect_shows_what_the_file_says_about_itself(described, lite0, tmp_path):
    from mvkit.metadata import inspect_artifact
    from mvkit.models import labels_of, preprocess_of

    for fmt, artifact in described.items():
        facts = inspect_artifact(without_sidecar(artifact, tmp_path))
        assert facts["format"] == fmt and not facts["has_sidecar"]
        assert facts["values"]["labels"] == {"value": labels_of(lite0), "from": ["file"]}, fmt
        assert facts["values"]["preprocess"]["value"]["size"] == preprocess_of(lite0).size, fmt
        assert facts["values"]["architecture"]["value"] == "tf_efficientnet_lite0", fmt
        assert facts["inputs"] and facts["outputs"], fmt
        if fmt == "coreml":  # the package's default size is the model's own, whatever else it enumerates
            assert facts["inputs"][0]["shape"] == [1, 3, 224, 224] and facts["inputs"][0]["sizes"] == [192, 224]
        with_sidecar = inspect_artifact(artifact)
        assert with_sidecar["values"]["labels"]["from"] == ["file", "sidecar"], fmt
        assert with_sidecar["mismatches"] == [], fmt
    onnx_alone = tmp_path / described["onnx"].name
    shown = subprocess.run([*CLI, "inspect", str(onnx_alone), "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    facts = json.loads(shown.stdout)
    assert facts["inputs"] == [{"name": "image", "shape": [-1, 3, 224, 224], "dtype": "float"}]
    assert facts["values"]["labels"]["value"][967] == "espresso"
    plain = subprocess.run([*CLI, "inspect", str(onnx_alone)], capture_output=True, text=True)
    assert plain.returncode == 0 and "1000: tench, Tinca tinca; goldfish" in plain.stdout and "mean [0.5, 0.5, 0.5]" in plain.stdout, plain.stdout
    if "torchscript" in described:  # a traced file keeps no shapes: said, not printed as "None"
        traced = subprocess.run([*CLI, "inspect", str(described["torchscript"])], capture_output=True, text=True)
        assert traced.returncode == 0 and "(the file records no shape)" in traced.stdout, traced.stdout
        assert "None" not in traced.stdout, traced.stdout


def test_a_file_with_neither_record_nor_sidecar_says_what_is_missing(described, photos, tmp_path):
    import onnx

    bare = tmp_path / "bare.onnx"
    model = onnx.load(str(described["onnx"]))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    shown = subprocess.run([*CLI, "predict", str(bare), str(photos["coffee"])], capture_output=True, text=True)
    assert shown.returncode == 2
    assert shown.stderr.startswith("error:") and len(shown.stderr.splitlines()) == 1
    assert "no sidecar" in shown.stderr and "carries no mvkit metadata" in shown.stderr
    inspected = subprocess.run([*CLI, "inspect", str(bare)], capture_output=True, text=True)
    assert inspected.returncode == 0 and f"{bare}: onnx, architecture unknown" in inspected.stdout
    assert "input  image: float [-1, 3, 224, 224]" in inspected.stdout and "mvkit cannot run it" in inspected.stdout


def test_quantized_files_describe_themselves_too(flowers_checkpoint, flowers_subset, tmp_path):
    """int8 files are made by their own tools (NNCF, ONNX Runtime, PT2E); the record is written after them."""
    from mvkit.compress import plan_quantize, quantize
    from mvkit.metadata import load_from_file

    checkpoint = tmp_path / "flowers.safetensors"
    shutil.copy(flowers_checkpoint, checkpoint)
    shutil.copy(sidecar_path(flowers_checkpoint), sidecar_path(checkpoint))
    source = Artifact.load(checkpoint)
    for plan in plan_quantize(checkpoint, "ptq", ["onnx", "openvino"], str(flowers_subset)):
        made = quantize(plan, checkpoint, str(flowers_subset), 16)
        described = load_from_file(made.path)
        assert described is not None and described.labels == source.labels
        assert described.extra["quantization"] == made.extra["quantization"]
        assert described.extra == json.loads(json.dumps(made.extra, default=str))
        assert np.allclose(described.preprocess.mean, source.preprocess.mean)


def test_a_checkpoint_copied_without_its_sidecar_still_loads(flowers_checkpoint, flowers_subset, tmp_path):
    """Its safetensors header carries mvkit's record, as every exported file does."""
    from safetensors.torch import save_file

    from mvkit.errors import MvkitError
    from mvkit.models import labels_of, load_model, preprocess_of
    from mvkit.predict import predict_files

    alone = tmp_path / "flowers.safetensors"
    shutil.copy(flowers_checkpoint, alone)
    with_sidecar = load_model(flowers_checkpoint)
    model = load_model(alone)
    assert labels_of(model) == labels_of(with_sidecar) and preprocess_of(model) == preprocess_of(with_sidecar)
    photos = sorted((flowers_subset / "tulip").glob("*.jpg"))[:4]
    assert [p.top for p in predict_files(model, photos)[0]] == [p.top for p in predict_files(with_sidecar, photos)[0]]
    shown = subprocess.run([*CLI, "inspect", str(alone)], capture_output=True, text=True)
    assert "labels        5: daisy; dandelion; rose; sunflower; tulip  (from file)" in shown.stdout, shown.stdout
    raw = tmp_path / "raw.safetensors"  # a timm state dict: no record, so mvkit cannot know its labels
    save_file({name: tensor.contiguous() for name, tensor in with_sidecar.state_dict().items()}, str(raw))
    with pytest.raises(MvkitError, match="--weights"):
        load_model(raw)
