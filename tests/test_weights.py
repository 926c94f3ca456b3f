"""Weight files: Apple ml-cvnets and lukemelas layouts, safetensors, and refusing unsafe pickles."""

import os
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mvkit.errors import MvkitError
from mvkit.models import create_model, labels_of, load_checkpoint, load_model, preprocess_of, save_checkpoint
from mvkit.models.weights import detect_layout, read_state_dict


def apple_key(timm_key: str, transformer_depth: dict[str, int]) -> str:
    """The name Apple's ml-cvnets MobileViT gives the tensor that timm calls timm_key (written from the
    cvnets module layout: ConvLayer2d = block.conv/block.norm, InvertedResidual = exp_1x1/conv_3x3/red_1x1,
    MobileViTBlock = local_rep/global_rep/conv_proj/fusion)."""
    def conv_layer(rest: str) -> str:
        return "block." + rest.replace("bn.", "norm.")

    for timm_prefix, apple_prefix in (("stem.", "conv_1."), ("final_conv.", "conv_1x1_exp.")):
        if timm_key.startswith(timm_prefix):
            return apple_prefix + conv_layer(timm_key[len(timm_prefix):])
    if timm_key.startswith("head.fc."):
        return "classifier.fc." + timm_key[len("head.fc."):]
    stage, block, rest = re.match(r"stages\.(\d+)\.(\d+)\.(.*)", timm_key).groups()
    layer = f"layer_{int(stage) + 1}.{block}."
    inverted_residual = {"conv1_1x1.": "block.exp_1x1.", "conv2_kxk.": "block.conv_3x3.", "conv3_1x1.": "block.red_1x1."}
    for part, apple in inverted_residual.items():
        if rest.startswith(part):
            return layer + apple + conv_layer(rest[len(part):])
    if rest.startswith("conv_kxk."):
        return layer + "local_rep.conv_3x3." + conv_layer(rest[len("conv_kxk."):])
    if rest == "conv_1x1.weight":
        return layer + "local_rep.conv_1x1.block.conv.weight"
    if rest.startswith("conv_proj."):
        return layer + "conv_proj." + conv_layer(rest[len("conv_proj."):])
    if rest.startswith("conv_fusion."):
        return layer + "fusion." + conv_layer(rest[len("conv_fusion."):])
    if rest.startswith("norm."):
        return layer + f"global_rep.{transformer_depth[f'{stage}.{block}']}." + rest[len("norm."):]
    index, part = re.match(r"transformer\.(\d+)\.(.*)", rest).groups()
    transformer = {"norm1.": "pre_norm_mha.0.", "attn.qkv.": "pre_norm_mha.1.qkv_proj.",
                   "attn.proj.": "pre_norm_mha.1.out_proj.", "norm2.": "pre_norm_ffn.0.",
                   "mlp.fc1.": "pre_norm_ffn.1.", "mlp.fc2.": "pre_norm_ffn.4."}
    for timm_part, apple in transformer.items():
        if part.startswith(timm_part):
            return layer + f"global_rep.{index}." + apple + part[len(timm_part):]
    raise AssertionError(f"no Apple name for {timm_key}")


def to_apple_checkpoint(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    depth = {}
    for key in state:
        found = re.match(r"stages\.(\d+\.\d+)\.transformer\.(\d+)\.", key)
        if found:
            depth[found.group(1)] = max(depth.get(found.group(1), 0), int(found.group(2)) + 1)
    return {apple_key(k, depth): v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def coffee_batch(photos):
    model = create_model("mobilevit_xxs")
    return preprocess_of(model).eval_transform()(Image.open(photos["coffee"]).convert("RGB")).unsqueeze(0)


def test_apple_mobilevit_checkpoint_gives_the_same_outputs(tmp_path, coffee_batch):
    torch.manual_seed(0)
    source = create_model("mobilevit_xxs")
    with torch.no_grad():  # non-trivial BN statistics so that every tensor matters
        for name, buffer in source.named_buffers():
            if "running" in name:
                buffer.uniform_(0.5, 1.5)
    apple = to_apple_checkpoint(source)
    for key in ("conv_1.block.conv.weight", "layer_3.1.global_rep.0.pre_norm_mha.1.qkv_proj.weight",
                "classifier.fc.weight", "layer_3.1.fusion.block.norm.running_var", "conv_1x1_exp.block.conv.weight"):
        assert key in apple
    path = tmp_path / "mobilevit_xxs_apple.pt"
    torch.save(apple, path)
    assert detect_layout(read_state_dict(path)) == "apple-cvnets"

    loaded = create_model("mobilevit_xxs", weights=path)
    with torch.no_grad():
        expected, actual = source(coffee_batch), loaded(coffee_batch)
    assert (expected - actual).abs().max() < 1e-5
    assert (actual - create_model("mobilevit_xxs")(coffee_batch)).abs().max() > 1e-2  # the weights did change


def test_apple_checkpoint_with_new_head_keeps_the_body(tmp_path):
    torch.manual_seed(0)
    source = create_model("mobilevit_xxs")
    path = tmp_path / "apple.pt"
    torch.save({"state_dict": to_apple_checkpoint(source)}, path)  # wrapped, as training scripts save them
    model = create_model("mobilevit_xxs", num_classes=5, weights=path)
    assert torch.equal(model.stem.conv.weight, source.stem.conv.weight)
    assert torch.equal(model.stages[2][1].transformer[0].attn.qkv.weight, source.stages[2][1].transformer[0].attn.qkv.weight)
    assert model.head.fc.weight.shape == (5, 320)
    assert not model.head.fc.weight.any()  # a new head on a pretrained body starts at zero


def test_apple_checkpoint_of_another_size_is_refused(tmp_path):
    path = tmp_path / "apple_xs.pt"
    torch.save(to_apple_checkpoint(create_model("mobilevit_xs")), path)
    with pytest.raises(MvkitError, match="different"):
        create_model("mobilevit_xxs", weights=path)


def test_lukemelas_efficientnet_weights_are_a_real_imagenet_model(lite0, photos):
    # The built-in weights come in lukemelas layout; that they classify a real photo proves the mapping.
    batch = preprocess_of(lite0).eval_transform()(Image.open(photos["coffee"]).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        probabilities = lite0(batch).softmax(-1)[0]
    assert labels_of(lite0)[int(probabilities.argmax())] == "espresso"


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(MvkitError, match="refused"):
        create_model("mobilevit_xxs", weights=path)
    assert not marker.exists()


def test_safetensors_state_dict_and_wrong_architecture(tmp_path, lite0):
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.state_dict().items()}, str(path))
    again = create_model("tf_efficientnet_lite0", weights=path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), lite0.state_dict().values()))
    with pytest.raises(MvkitError, match="does not match|does not fit"):
        create_model("mobilevit_xxs", weights=path)


def test_checkpoint_round_trip_keeps_weights_labels_and_preprocess(tmp_path, coffee_batch):
    torch.manual_seed(1)
    model = create_model("mobilevit_xxs", labels=["daisy", "rose", "tulip"])
    path = tmp_path / "run" / "best.safetensors"
    artifact = save_checkpoint(model, path, metrics={"top1": 0.5})
    assert artifact.num_classes == 3 and (tmp_path / "run" / "best.safetensors.mvkit.json").exists()
    loaded = load_model(path)
    assert labels_of(loaded) == ["daisy", "rose", "tulip"]
    assert preprocess_of(loaded) == preprocess_of(model)
    with torch.no_grad():
        assert torch.equal(model(coffee_batch), loaded(coffee_batch))
    assert load_checkpoint(path) is not None


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(MvkitError, match="does not exist"):
        create_model("mobilevit_xxs", weights=tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MvkitError, match="not a readable PyTorch checkpoint"):
        create_model("mobilevit_xxs", weights=junk)
