"""The pieces of the training loop: recipe, sampler, parameter groups, losses, model inputs."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from mvkit.errors import MvkitError
from mvkit.models import create_model
from mvkit.preprocess import Preprocess
from mvkit.train import build_recipe, load_recipe
from mvkit.train.batches import model_input
from mvkit.train.losses import distillation_loss, label_loss
from mvkit.train.optim import build_optimizer, build_scheduler
from mvkit.train.recipe import TrainRecipe, train_size_at
from mvkit.train.sampling import EpochBatchSampler


def test_presets_yaml_and_overrides(tmp_path):
    guide = build_recipe("guide")  # the guide's recipe, exactly
    assert (guide.lr, guide.stem_lr, guide.head_lr, guide.weight_decay) == (3e-5, 1e-5, 5e-5, 0.01)
    assert (guide.mixup_alpha, guide.cutmix_alpha, guide.mix_prob, guide.mix_switch_prob) == (0.2, 1.0, 0.5, 0.5)
    assert guide.pretrained and guide.patience == 10 and not guide.native_size
    # the dataclass's own defaults are the guide's recipe, and say so: TrainRecipe() from the Python API used to
    # record preset "finetune" with the guide's lr 3e-5, so its recipe.yaml named a preset it did not train with
    assert TrainRecipe() == guide
    finetune = build_recipe()  # the default: one lr for the whole net, warm-up, regularised, native size
    assert finetune.preset == "finetune" and finetune.pretrained and finetune.native_size
    assert finetune.stem_lr is None and finetune.head_lr is None and finetune.warmup_epochs > 0
    # --lr alone moves the whole net: no stem or head left at the preset's own value
    assert {g["lr_scale"] for g in build_optimizer(create_model("mobilevit_xxs", num_classes=3),
                                                   build_recipe(lr=1e-2)).param_groups} == {1.0}
    head_only = build_recipe("head-only")
    assert head_only.freeze_backbone and head_only.pretrained
    assert not build_recipe("scratch").pretrained

    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("preset: head-only\nepochs: 7\nlr: 0.002\n")
    recipe = build_recipe(recipe_file=recipe_file, lr=0.005, batch_size=None)
    assert recipe.preset == "head-only" and recipe.freeze_backbone and recipe.epochs == 7 and recipe.lr == 0.005
    recipe.save(tmp_path / "resolved.yaml")
    assert load_recipe(tmp_path / "resolved.yaml") == recipe

    recipe_file.write_text("epochz: 3\n")
    with pytest.raises(MvkitError, match="epochz"):
        build_recipe(recipe_file=recipe_file)
    with pytest.raises(MvkitError, match="even batch size"):
        build_recipe(batch_size=31)
    with pytest.raises(MvkitError, match="preset"):
        build_recipe("fast")


def test_a_shorter_finetune_mixes_fewer_batches(tmp_path):
    """MixUp/CutMix at the finetune preset's full strength hold back a run shorter than its 15 epochs."""
    assert build_recipe().mix_prob == 1.0 and build_recipe(epochs=40).mix_prob == 1.0
    assert build_recipe(epochs=3).mix_prob == pytest.approx(0.2)
    assert build_recipe(epochs=3, mix_prob=0.9).mix_prob == 0.9  # given: kept as it is
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("epochs: 5\nmix_prob: 1.0\n")
    assert build_recipe(recipe_file=recipe_file).mix_prob == 1.0
    assert build_recipe("guide", epochs=3).mix_prob == 0.5  # the guide's recipe is kept exactly
    short = build_recipe(epochs=6)
    short.save(tmp_path / "resolved.yaml")  # a resumed run keeps the scaled value
    assert load_recipe(tmp_path / "resolved.yaml").mix_prob == pytest.approx(0.4)


def test_sampler_is_seeded_sharded_and_resumable():
    targets = [i % 5 for i in range(103)]
    full = list(EpochBatchSampler(targets, 8, seed=1, epoch=0))
    assert len(full) == 12 and all(len(b) == 8 for b in full)
    assert full == list(EpochBatchSampler(targets, 8, seed=1, epoch=0))
    assert full != list(EpochBatchSampler(targets, 8, seed=1, epoch=1))
    assert list(EpochBatchSampler(targets, 8, seed=1, epoch=0, start_batch=5)) == full[5:]
    ranks = [list(EpochBatchSampler(targets, 4, seed=1, epoch=0, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 12
    for step in range(12):  # the two processes split each global batch, without overlap
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(full[step])


def test_balanced_sampling_evens_out_classes():
    targets = [0] * 900 + [1] * 100
    drawn = [targets[i] for batch in EpochBatchSampler(targets, 100, seed=0, epoch=0, balanced=True) for i in batch]
    counts = Counter(drawn)
    assert abs(counts[0] - counts[1]) < 100  # unbalanced sampling would give 900 vs 100


def test_guide_learning_rates_per_group_under_the_schedule():
    model = create_model("tf_efficientnet_lite0", num_classes=5)
    recipe = build_recipe("guide", warmup_epochs=0)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=10)
    lrs = {(g["group"], g["weight_decay"]): g["lr"] for g in optimizer.param_groups}
    assert lrs[("stem", 0.01)] == pytest.approx(1e-5)
    assert lrs[("body", 0.01)] == pytest.approx(3e-5)
    assert lrs[("head", 0.01)] == pytest.approx(5e-5)
    assert ("body", 0.0) in lrs  # norms and biases: no weight decay
    stem = next(g for g in optimizer.param_groups if g["group"] == "stem" and g["weight_decay"])
    assert any(p is model.conv_stem.weight for p in stem["params"])
    scheduler.step_update(500)  # halfway through 100 epochs: cosine at half
    halfway = {g["group"]: g["lr"] for g in optimizer.param_groups}
    assert halfway["stem"] == pytest.approx(0.5e-5, rel=0.01) and halfway["head"] == pytest.approx(2.5e-5, rel=0.01)


def test_layer_decay_and_frozen_backbone_groups():
    model = create_model("mobilevit_xxs", num_classes=3)
    groups = build_optimizer(model, build_recipe(layer_decay=0.5)).param_groups
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[0] < 0.01 and scales[-1] == 1.0  # deep layers learn faster than the stem
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("head.")
    head_only = build_optimizer(model, build_recipe("head-only")).param_groups
    assert sum(p.numel() for g in head_only for p in g["params"]) == 320 * 3 + 3


def test_distillation_loss_is_the_guides_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    alpha, temperature = 0.3, 4.0
    p_teacher = F.softmax(teacher / temperature, dim=-1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / temperature, dim=-1))).sum(-1).mean()
    expected = alpha * F.cross_entropy(student, labels) + (1 - alpha) * temperature ** 2 * kl
    assert distillation_loss(student, teacher, labels, alpha, temperature) == pytest.approx(float(expected), rel=1e-5)
    # A teacher identical to the student adds nothing beyond the label term.
    same = distillation_loss(student, student, labels, alpha, temperature)
    assert same == pytest.approx(alpha * float(F.cross_entropy(student, labels)), rel=1e-5)
    # Soft targets (MixUp) go through timm's SoftTargetCrossEntropy.
    soft = F.one_hot(labels, 5).float()
    assert label_loss(student, soft) == pytest.approx(float(F.cross_entropy(student, labels)), rel=1e-5)


def test_each_model_gets_the_batch_at_its_own_size_and_normalisation():
    raw = torch.rand(2, 3, 160, 160)
    student = Preprocess(size=128, crop_pct=1.0, interpolation="bicubic", mean=(0.0,) * 3, std=(1.0,) * 3)
    teacher = Preprocess(size=224, crop_pct=1.0, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x_student, x_teacher = model_input(raw, student), model_input(raw, teacher)
    assert x_student.shape[-1] == 128 and x_teacher.shape[-1] == 224
    assert 0.0 <= x_student.min() and x_student.max() <= 1.0
    assert torch.allclose(x_teacher.mean(dim=(0, 2, 3)) * torch.tensor(teacher.std) + torch.tensor(teacher.mean),
                          raw.mean(dim=(0, 2, 3)), atol=0.01)


@given(epochs=st.integers(1, 300), start=st.integers(32, 1000), final=st.integers(33, 1024))
def test_progressive_resizing_rises_to_the_final_size_and_trains_the_last_third_there(epochs, start, final):
    assert train_size_at(TrainRecipe(epochs=epochs), 0, final) == final  # off by default
    sizes = [train_size_at(TrainRecipe(epochs=epochs, progressive_from=start), epoch, final) for epoch in range(epochs)]
    assert sizes[-1] == final and sizes == sorted(sizes)
    if start >= final or epochs == 1:
        assert set(sizes) == {final}
        return
    assert sizes[0] == start and all(start <= size <= final for size in sizes)
    assert all(size % 32 == 0 for size in sizes if size not in (start, final))
    assert sizes.count(final) >= epochs / 3  # BatchNorm statistics settle at the size the model is used at


def test_cli_train_takes_model_and_data_from_a_recipe_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mvkit import cli

    seen = {}
    monkeypatch.setattr("mvkit.train.train", lambda recipe, **options: seen.setdefault("recipe", recipe) and None)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("model: mobilenetv3_small_100\ndata: builtin:fashion\npreset: head-only\n")
    CliRunner().invoke(cli.app, ["train", "--recipe", str(recipe_file), "--lr", "0.01", "--ema", "--ema-decay", "0.998",
                                 "--out", str(tmp_path)])
    recipe = seen["recipe"]
    assert (recipe.model, recipe.data, recipe.preset, recipe.lr) == ("mobilenetv3_small_100", "builtin:fashion", "head-only", 0.01)
    assert (recipe.ema, recipe.ema_decay) == (True, 0.998)
    result = CliRunner().invoke(cli.app, ["train", "--out", str(tmp_path)])
    assert isinstance(result.exception, MvkitError) and "MODEL and DATA" in str(result.exception)


@pytest.mark.parametrize("option, value, message", [
    ("epochs", 0, "epochs must be at least 1, not 0"),
    ("lr", -0.001, "lr must be positive, not -0.001"),
    ("mix_prob", 1.5, "mix_prob must be in [0, 1], not 1.5"),
    ("ema_decay", 1.0, "ema_decay must be in (0, 1), not 1.0"),
    ("distill_temperature", 0.0, "distill_temperature must be positive, not 0.0"),
    # these trained without a word: a negative stem lr climbs the loss, a smoothing over 1 inverts the labels
    ("stem_lr", -1.0, "stem_lr must be positive, not -1.0"),
    ("head_lr", 0.0, "head_lr must be positive, not 0.0"),
    ("layer_decay", 2.0, "layer_decay must be in (0, 1], not 2.0"),
    ("label_smoothing", 1.5, "label_smoothing must be in [0, 1), not 1.5"),
    ("mix_switch_prob", -0.5, "mix_switch_prob must be in [0, 1], not -0.5"),
    ("crop_pct", 0.0, "crop_pct must be in (0, 1], not 0.0"),
])
def test_a_bad_recipe_number_is_named_with_its_value(option, value, message):
    """One error used to lump epochs, batch_size and lr together ("must be positive") without saying which."""
    with pytest.raises(MvkitError) as refused:
        build_recipe("finetune", model="tf_efficientnet_lite0", data="builtin:fashion", out="unused",
                     **{option: value}).validate()
    assert str(refused.value) == message
