"""Whole training runs on real photos: outputs, distillation inputs, NaN, Ctrl-C, kill -9 + resume, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mvkit.data import load_data
from mvkit.errors import MvkitError
from mvkit.models import labels_of, load_model, preprocess_of
from mvkit.data.images import SizeSummary
from mvkit.train import build_recipe, load_recipe, train
from mvkit.train.recipe import native_input_size
from mvkit.train import loop as train_loop
from mvkit.train.state import load_state

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe(data: Path, out: Path, **changes):
    """MobileViT-XXS from scratch at 32 px on 80 real flower photos: seconds per epoch."""
    options = dict(model="mobilevit_xxs", data=str(data), out=str(out), preset="scratch", img_size=32,
                   batch_size=8, epochs=2, warmup_epochs=0.0, seed=0)
    options.update(changes)
    return build_recipe(**options)


@contextmanager
def forward_hook_on(builder: str, hook):
    """While the block runs, the model that train_loop.<builder> builds calls `hook` before each forward."""
    original = getattr(train_loop, builder)

    def build_and_watch(recipe, classes):
        model = original(recipe, classes)
        model.register_forward_pre_hook(hook)
        return model

    setattr(train_loop, builder, build_and_watch)
    try:
        yield
    finally:
        setattr(train_loop, builder, original)


def test_run_folder_holds_checkpoints_metrics_and_charts(flowers_subset, tmp_path):
    result = train(tiny_recipe(flowers_subset, tmp_path / "run", epochs=3, ema=True))
    out = tmp_path / "run"
    for name in ("recipe.yaml", "split.json", "resume.pt", "best.safetensors", "best.safetensors.mvkit.json",
                 "last.safetensors", "metrics.csv", "metrics.json", "curves.png", "confusion.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(row["train_seconds"] > 0 and row["val_seconds"] > 0 for row in history)
    assert result.best_epoch == 1 + min(range(3), key=lambda i: history[i]["val_loss"])
    best = load_model(out / "best.safetensors")
    assert labels_of(best) == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert preprocess_of(best).size == 32
    assert len((out / "metrics.csv").read_text().splitlines()) == 4
    assert result.train_images_per_second > 0


def test_without_img_size_a_run_trains_at_the_photos_native_size(flowers_subset, tmp_path):
    # the 128 px flower photos: 128 px, not MobileViT-XXS's 256; recorded so a resumed run keeps it
    result = train(tiny_recipe(flowers_subset, tmp_path / "run", img_size=None, epochs=1, batch_size=16))
    assert result.recipe.img_size == 128 and preprocess_of(load_model(result.best_checkpoint)).size == 128
    assert load_recipe(tmp_path / "run" / "recipe.yaml").img_size == 128
    # continuing an mvkit checkpoint keeps the size it was trained at, not the photos'
    small = train(tiny_recipe(flowers_subset, tmp_path / "small", epochs=1, batch_size=16))
    continued = train(tiny_recipe(flowers_subset, tmp_path / "continued", model=str(small.best_checkpoint),
                                  preset="finetune", img_size=None, epochs=1, batch_size=16))
    assert continued.recipe.img_size is None and preprocess_of(load_model(continued.best_checkpoint)).size == 32
    frozen = build_recipe("head-only", model="mobilevit_xxs", data=str(flowers_subset))
    assert native_input_size(frozen, 256, SizeSummary.of([(128, 128)])) is None  # a frozen body keeps its scale
    assert native_input_size(build_recipe(), 256, SizeSummary.of([(28, 28)])) == 64
    assert native_input_size(build_recipe(), 224, SizeSummary.of([(500, 375)])) is None  # bigger: the model's


def test_a_vit_trains_at_the_photos_size_and_its_checkpoint_loads_exports_and_verifies(flowers_subset, tmp_path):
    """DeiT's position embeddings are built for 224 px: at the 128 px that the photos' size chooses, training failed
    in its first forward. They are resampled to the size (timm's set_input_size), and the checkpoint, which holds
    them at that size, loads, exports and verifies."""
    from mvkit.export import export
    from mvkit.verify import verify

    result = train(tiny_recipe(flowers_subset, tmp_path / "deit", model="deit_tiny", img_size=None, epochs=1,
                               batch_size=16))
    model = load_model(result.best_checkpoint)
    assert result.recipe.img_size == 128 and preprocess_of(model).size == 128
    assert model.pos_embed.shape[1] == 1 + (128 // 16) ** 2
    report = verify(export(result.best_checkpoint, "onnx").path, str(flowers_subset))
    assert report.agreement == 1.0 and report.max_abs_prob_diff < 1e-4
    # asked for a smaller side (live's size for a low-power device), it resamples them again
    from mvkit.runtime import load_predictor

    assert load_predictor(result.best_checkpoint).run(np.zeros((1, 3, 96, 96), np.float32)).shape == (1, 5)
    # its one input size cannot rise epoch by epoch
    with pytest.raises(MvkitError, match="takes one input size, 128 px"):
        train(tiny_recipe(flowers_subset, tmp_path / "rising", model="deit_tiny", img_size=128, progressive_from=64,
                          epochs=2, batch_size=16))


def test_teacher_sees_photos_at_its_own_size_and_normalisation(flowers_subset, tmp_path):
    teacher_run = train(tiny_recipe(flowers_subset, tmp_path / "teacher", model="tf_efficientnet_lite0",
                                    preset="head-only", img_size=48, epochs=1))
    seen = {}

    def record(module, args):
        seen.setdefault("shape", args[0].shape)
        seen.setdefault("min", float(args[0].min()))

    with forward_hook_on("_build_teacher", record):
        train(tiny_recipe(flowers_subset, tmp_path / "student", teacher=str(teacher_run.best_checkpoint), epochs=1))
    assert seen["shape"][-1] == 48  # the teacher's size, not the student's 32
    assert seen["min"] < -0.5  # mean/std 0.5 normalisation gives [-1, 1]; the student's pixels/255 never goes below 0


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(flowers_subset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_recipe(flowers_subset, out, epochs=1))
    before = (out / "last.safetensors").read_bytes()
    monkeypatch.setattr(train_loop, "label_loss", lambda *args, **kwargs: torch.tensor(float("nan")))
    recipe = tiny_recipe(flowers_subset, out, epochs=2)
    recipe.save(out / "recipe.yaml")
    with pytest.raises(train_loop.TrainingDiverged, match="nan at epoch 2, batch 1"):
        train(recipe, resume=True)
    assert (out / "last.safetensors").read_bytes() == before
    assert load_state(out / "resume.pt")["progress"].epoch == 1


def test_ctrl_c_stops_at_the_batch_boundary_and_saves_the_resume_state(flowers_subset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = train_loop.label_loss

    def interrupt_in_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # a real SIGINT, in the middle of the third batch
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_loop, "label_loss", interrupt_in_third)
    with pytest.raises(MvkitError, match="stopped by SIGINT.*--resume"):
        train(tiny_recipe(flowers_subset, tmp_path / "run"))
    progress = load_state(tmp_path / "run" / "resume.pt")["progress"]
    assert (progress.epoch, progress.batch, progress.updates) == (0, 3, 3)  # the third batch was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back


def _weights(path: Path) -> dict:
    return load_file(path)


@pytest.mark.parametrize("signal_number, at_forward", [(signal.SIGINT, 3), (signal.SIGTERM, 11), (signal.SIGINT, 10)])
def test_sigint_or_sigterm_anywhere_then_resume_gives_the_uninterrupted_weights(flowers_subset, tmp_path,
                                                                                 signal_number, at_forward):
    """The signal lands inside a forward pass (mid-batch; forward 10 is a validation batch at the end of epoch
    1: 8 training batches, then 2 of validation); the resumed run ends with exactly the weights of a run that
    was never interrupted."""
    recipe = dict(epochs=2, deterministic=True)
    train(tiny_recipe(flowers_subset, tmp_path / "straight", **recipe))
    out = tmp_path / "interrupted"
    calls = {"n": 0}

    def send_signal(module, args):
        calls["n"] += 1
        if calls["n"] == at_forward:
            os.kill(os.getpid(), signal_number)

    with forward_hook_on("_build_student", send_signal), \
            pytest.raises(MvkitError, match=f"stopped by {signal.Signals(signal_number).name}"):
        train(tiny_recipe(flowers_subset, out, **recipe))
    train(build_recipe(recipe_file=out / "recipe.yaml"), resume=True)
    straight, again = _weights(tmp_path / "straight" / "last.safetensors"), _weights(out / "last.safetensors")
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back


def test_a_stop_after_the_last_epoch_says_so_and_resume_only_finishes(flowers_subset, tmp_path):
    """A signal in the last epoch's validation: every epoch is trained, so the message says "after the last
    epoch" (it said "at epoch 2, batch 0" of a 1-epoch run), and --resume trains nothing more: it writes the
    curves and the confusion matrix."""
    out, calls = tmp_path / "run", {"n": 0}

    def send_sigterm(module, args):
        calls["n"] += 1
        if calls["n"] == 10:  # 8 training batches, then the second of 2 validation batches
            os.kill(os.getpid(), signal.SIGTERM)

    with forward_hook_on("_build_student", send_sigterm), pytest.raises(MvkitError) as stopped:
        train(tiny_recipe(flowers_subset, out, epochs=1))
    assert "stopped by SIGTERM after the last epoch (1 of 1; checkpoints saved)" in str(stopped.value)
    assert "Finish with: mvkit train --resume" in str(stopped.value)
    assert not (out / "confusion.png").exists()
    trained = _weights(out / "last.safetensors")
    result = train(build_recipe(recipe_file=out / "recipe.yaml"), resume=True)
    assert len(result.history) == 1 and (out / "confusion.png").exists() and (out / "curves.png").exists()
    again = _weights(out / "last.safetensors")
    assert all(torch.equal(trained[k], again[k]) for k in trained)
    shown = subprocess.run(_cli("train", "--resume", "--out", str(out)), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr  # said "0.0 training img/s"
    assert "the run had trained all its epochs before: nothing was left to train" in shown.stdout, shown.stdout


def test_verify_eval_and_bench_without_data_take_the_photos_the_checkpoint_was_trained_on(flowers_subset, tmp_path,
                                                                                         capsys, monkeypatch):
    """As Ultralytics' val takes the data a model trained on: verify required --data though the file records it, and
    bench --all-formats without --data measured speed only and named no fastest verified file."""
    import mvkit.export
    from mvkit.cli import run as cli_run
    from mvkit.export import export
    from mvkit.models import create_model, save_checkpoint

    pytest.importorskip("onnxruntime")
    trained = train(tiny_recipe(flowers_subset, tmp_path / "run", epochs=1))
    onnx_file = export(trained.best_checkpoint, "onnx").path
    assert cli_run(["verify", str(onnx_file), "--json"]) == 0
    taken = json.loads(capsys.readouterr().out)
    assert cli_run(["verify", str(onnx_file), "--data", str(flowers_subset), "--json"]) == 0
    assert taken == json.loads(capsys.readouterr().out) and taken["count"] == len(load_data(flowers_subset).val)
    # eval too: without DATA it scores the same val photos as with it
    assert cli_run(["eval", str(onnx_file), "--out", str(tmp_path / "eval"), "--json"]) == 0
    taken = json.loads(capsys.readouterr().out)
    assert cli_run(["eval", str(onnx_file), str(flowers_subset), "--out", str(tmp_path / "eval"), "--json"]) == 0
    assert taken == json.loads(capsys.readouterr().out)
    untrained = save_checkpoint(create_model("mobilevit_xxs", labels=["a", "b"]), tmp_path / "untrained.safetensors")
    assert cli_run(["verify", str(export(untrained.path, "onnx").path)]) == 2
    assert "give --data" in capsys.readouterr().err
    assert cli_run(["eval", "mobilevit_xxs", "--out", str(tmp_path / "eval2")]) == 2
    assert "give DATA" in capsys.readouterr().err
    monkeypatch.setattr(mvkit.export, "available_formats", lambda: ["onnx"])  # one format is enough here
    assert cli_run(["bench", "--all-formats", str(trained.best_checkpoint), "--rounds", "2", "--batch", "2",
                    "--no-memory", "--out", str(tmp_path / "bench")]) == 0
    shown = capsys.readouterr()
    assert f"photos: {flowers_subset}, the data the checkpoint was trained on" in shown.err
    assert "fastest verified on this machine: " in shown.out
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())
    # the checkpoint, its ONNX file and that file's int8, calibrated on the recorded photos: each verified
    assert sorted(row["format"] for row in rows) == ["onnx", "onnx", "safetensors"]
    assert all(row["agreement"] for row in rows)


def test_progressive_resizing_trains_at_rising_sizes_and_resumes_exactly(flowers_subset, tmp_path):
    """3 epochs rising from 32 to 64 px: the first trains at 32 px, the others, every validation and the
    checkpoint at 64. Stopped inside epoch 2 and resumed, the run ends with the uninterrupted run's weights."""
    recipe = dict(img_size=64, progressive_from=32, epochs=3, deterministic=True)
    seen = []
    with forward_hook_on("_build_student", lambda module, args: seen.append((module.training, args[0].shape[-1]))):
        result = train(tiny_recipe(flowers_subset, tmp_path / "straight", **recipe))
    assert [size for training, size in seen if training] == [32] * 8 + [64] * 16  # 8 batches an epoch
    assert {size for training, size in seen if not training} == {64}
    assert [row["train_px"] for row in result.history] == [32, 64, 64]
    assert preprocess_of(load_model(result.best_checkpoint)).size == 64
    out, calls = tmp_path / "interrupted", {"n": 0}

    def send_sigterm(module, args):
        calls["n"] += 1
        if calls["n"] == 12:  # epoch 2's second batch: 8 training and 2 validation batches come before it
            os.kill(os.getpid(), signal.SIGTERM)

    with forward_hook_on("_build_student", send_sigterm), pytest.raises(MvkitError, match="stopped by SIGTERM"):
        train(tiny_recipe(flowers_subset, out, **recipe))
    train(build_recipe(recipe_file=out / "recipe.yaml"), resume=True)
    straight, again = _weights(tmp_path / "straight" / "last.safetensors"), _weights(out / "last.safetensors")
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_a_second_training_into_the_same_folder_is_refused(flowers_subset, tmp_path):
    out = tmp_path / "run"
    with train_loop.run_folder_lock(out, main_process=True):  # a first run holding the folder
        with pytest.raises(MvkitError, match="in use by another mvkit train"):
            train(tiny_recipe(flowers_subset, out, epochs=1))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    train(tiny_recipe(flowers_subset, out, epochs=1))  # free again once the first has finished


def test_a_new_run_into_a_folder_holding_one_is_refused_unless_resumed_or_overwritten(flowers_subset, tmp_path,
                                                                                     capsys):
    """The same command run again without --resume started over in the folder and replaced an interrupted run's
    state (and a finished run's checkpoints) as it saved."""
    from mvkit.cli import run as cli_run

    out, calls = tmp_path / "run", {"n": 0}

    def send_sigterm(module, args):
        calls["n"] += 1
        if calls["n"] == 12:  # epoch 2's second batch
            os.kill(os.getpid(), signal.SIGTERM)

    with forward_hook_on("_build_student", send_sigterm), pytest.raises(MvkitError, match="stopped by SIGTERM"):
        train(tiny_recipe(flowers_subset, out, epochs=3))
    state = (out / "resume.pt").read_bytes()
    again = ["train", "mobilevit_xxs", str(flowers_subset), "--preset", "scratch", "--img-size", "32", "--epochs", "3",
             "--out", str(out)]
    assert cli_run(again) == 2
    refusal = capsys.readouterr().err
    assert f"{out} holds a run stopped at epoch 2 of 3, batch " in refusal
    assert f"continue it with `mvkit train --resume --out {out}`" in refusal
    assert (out / "resume.pt").read_bytes() == state
    train(build_recipe(recipe_file=out / "recipe.yaml"), resume=True)
    best = (out / "best.safetensors").read_bytes()
    with pytest.raises(MvkitError, match="holds a finished run \\(3 epochs\\): train into another --out, or add "
                                         "--overwrite"):
        train(tiny_recipe(flowers_subset, out, epochs=1))
    assert (out / "best.safetensors").read_bytes() == best
    assert cli_run(again[:-3] + ["1", "--overwrite", "--out", str(out)]) == 0  # starts over, as asked
    assert len(json.loads((out / "metrics.json").read_text())) == 1


def test_a_run_that_fails_its_checks_leaves_no_folder(flowers_subset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(MvkitError, match="progressive_from 64 px must be below the input size 32 px"):
        train(tiny_recipe(flowers_subset, out, progressive_from=64))
    assert not out.exists()


def test_fewer_photos_than_a_batch_train_as_one_batch_of_them_all(flowers_subset, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_recipe(flowers_subset, out, batch_size=512, epochs=1))
    training_photos = len(json.loads((out / "split.json").read_text())["train"])
    expected = training_photos - training_photos % 2  # MixUp pairs the photos of a batch
    assert result.recipe.batch_size == expected and f"batch_size: {expected}" in (out / "recipe.yaml").read_text()
    assert len(result.history) == 1


def test_a_moved_run_folder_resumes_from_anywhere(flowers_subset, tmp_path, monkeypatch):
    first = tmp_path / "first"
    train(tiny_recipe(flowers_subset, first, epochs=1))
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = build_recipe(recipe_file=moved / "recipe.yaml", epochs=2, out=str(moved))
    result = train(recipe, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2] and (moved / "last.safetensors").exists()
    assert not first.exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mvkit.cli", *args]


def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_weights(flowers_subset, tmp_path):
    common = ["mobilevit_xxs", str(flowers_subset), "--preset", "scratch", "--img-size", "32", "--batch-size", "8",
              "--epochs", "3", "--warmup-epochs", "0", "--deterministic", "--save-every-steps", "1"]
    subprocess.run(_cli("train", *common, "--out", str(tmp_path / "straight")), check=True, capture_output=True)

    out = tmp_path / "killed"
    process = subprocess.Popen(_cli("train", *common, "--out", str(out)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    killed_at = None
    while process.poll() is None:
        try:
            progress = load_state(out / "resume.pt")["progress"]
        except (MvkitError, RuntimeError, EOFError):
            time.sleep(0.01)
            continue
        if progress.epoch >= 1 and progress.batch >= 2:  # in the middle of epoch 2 or 3
            process.send_signal(signal.SIGKILL)
            killed_at = (progress.epoch, progress.batch)
            break
    process.wait()
    assert killed_at is not None, "the run finished before it could be killed"
    assert not json.loads((out / "metrics.json").read_text())[-1]["epoch"] == 3

    resumed = subprocess.run(_cli("train", "--resume", "--out", str(out)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    straight, again = load_file(tmp_path / "straight" / "last.safetensors"), load_file(out / "last.safetensors")
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_two_processes_stay_in_sync(flowers_subset, tmp_path):
    pytest.importorskip("accelerate")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # torchrun starts the two processes; accelerate inside sees WORLD_SIZE=2 without a GPU and uses gloo.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(REPO / "tests" / "ddp_worker.py"), str(flowers_subset), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["world_size"] == reports[1]["world_size"] == 2
    assert reports[0]["checksum"] == reports[1]["checksum"]  # identical weights on both ranks
    assert reports[0]["updates"] == reports[1]["updates"] == 2 * (64 // 16)  # 2 epochs of 64 photos, 8 per rank


def test_verify_and_calibration_use_the_split_the_checkpoint_was_trained_on(flowers_subset, tmp_path):
    from mvkit.compress.calibration import calibration_batches
    from mvkit.runtime import load_predictor
    from mvkit.verify import verify

    result = train(tiny_recipe(flowers_subset, tmp_path / "run", epochs=1, val_fraction=0.5))
    report = verify(result.best_checkpoint, str(flowers_subset), reference=result.best_checkpoint)
    assert report.count == 40  # half of the 80 photos, as trained; the default split gives 15
    batches = calibration_batches(load_predictor(result.best_checkpoint), str(flowers_subset), 1000)
    assert sum(len(b) for b in batches) == 40  # calibration takes training photos only


def test_continuing_from_a_checkpoint_on_changed_classes_keeps_each_row_by_name(flowers_checkpoint, flowers_subset,
                                                                                  photos):
    """A checkpoint of daisy, dandelion, rose, sunflower, tulip continued on rose, daisy and a new orchid: rose and
    daisy keep their trained rows whatever their new positions, orchid starts at zero, the rest are left out."""
    from PIL import Image

    before = load_model(flowers_checkpoint)
    recipe = build_recipe("finetune", model=str(flowers_checkpoint), data=str(flowers_subset))
    after = train_loop._build_student(recipe, ["daisy", "orchid", "rose"]).eval()
    assert labels_of(after) == ["daisy", "orchid", "rose"]
    transform = preprocess_of(before).eval_transform()
    batch = torch.stack([transform(Image.open(p).convert("RGB"))
                         for p in [*sorted((flowers_subset / "rose").iterdir())[:4], photos["coffee"]]])
    with torch.no_grad():
        old, new = before(batch), after(batch)
    known = labels_of(before)
    assert torch.allclose(new[:, 0], old[:, known.index("daisy")], atol=1e-5)
    assert torch.allclose(new[:, 2], old[:, known.index("rose")], atol=1e-5)
    assert torch.equal(new[:, 1], torch.zeros(len(batch)))
