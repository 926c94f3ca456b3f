"""The live engine on real video made from real flower photos: rate, parity with `mvkit predict`, policies,
robust sources (a stream on loopback that drops, corrupt frames, signals), and the web page in a real browser."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from mvkit.cli import run as cli_run  # noqa: E402
from mvkit.live import run as live_run  # noqa: E402
from mvkit.live.engine import LiveOptions, LiveRun  # noqa: E402
from mvkit.live.policies import Device, SizeChoice, ThermalRate  # noqa: E402
from mvkit.live.sources import Frame, Source  # noqa: E402

from conftest import headless_chromium, needs_chromium  # noqa: E402

FFMPEG = shutil.which("ffmpeg")


def flower_photos(flowers: Path, count: int) -> list[Path]:
    """`count` real photos, taken round-robin over the classes so the labels change along the clip."""
    classes = [sorted(d.glob("*.jpg")) for d in sorted(p for p in flowers.iterdir() if p.is_dir())]
    return [classes[i % len(classes)][i // len(classes)] for i in range(count)]


def write_clip(path: Path, photos: list[Path], fps: int, frames_each: int, side: int = 160,
               codec: str = "libx264", height: int | None = None, stored=lambda picture: picture) -> int:
    """A real video: each photo (resized to side x height) held for `frames_each` frames, as `stored` turns it.
    Returns the number of frames."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = stored(Image.new("RGB", (side, height or side))).size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        count = 0
        for photo in photos:
            picture = stored(Image.open(photo).convert("RGB").resize((side, height or side)))
            for _ in range(frames_each):
                for packet in stream.encode(av.VideoFrame.from_image(picture)):
                    container.mux(packet)
                count += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return count


def decoded_frames(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(flowers, tmp_path_factory) -> Path:
    """3 s at 30 fps: 18 real photos, 5 frames each."""
    path = tmp_path_factory.mktemp("live") / "flowers30.mp4"
    assert write_clip(path, flower_photos(flowers, 18), fps=30, frames_each=5) == 90
    return path


@pytest.fixture(scope="module")
def onnx_model(exported) -> Path:
    return exported["onnx"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_video_at_half_rate_matches_predict_frame_by_frame(clip, onnx_model, tmp_path):
    """30 fps video, --fps 15: every other frame processed, the rest dropped and counted; each processed frame's
    label and probability equal `mvkit predict` on that frame saved as a lossless PNG."""
    from mvkit.predict import predict_files

    out, metrics = tmp_path / "annotated.mp4", tmp_path / "metrics.json"
    engine = live_run(onnx_model, clip, fps=15, out=out, metrics_path=metrics)
    results = list(engine)
    summary = json.loads(metrics.read_text())
    frames = summary["frames"]
    assert frames["read"] == 90 and frames["corrupt"] == 0
    assert frames["processed"] == len(results)
    assert frames["processed"] + frames["dropped"]["throttled"] + frames["dropped"]["stale"] == frames["read"]
    assert 40 <= frames["processed"] <= 50, frames
    assert frames["dropped"]["stale"] <= 2, "the worker keeps up with 15 fps: frames must not pile up"
    indices = [r.index for r in results]
    assert indices == sorted(indices) and len(set(indices)) == len(indices), "results in frame order, once each"
    assert summary["stopped_by"] == "end of source"
    assert summary["fps"]["achieved"] == pytest.approx(15, rel=0.15)

    video = decoded_frames(clip)
    for result in results[::4]:
        png = tmp_path / f"frame{result.index:03d}.png"
        video[result.index].save(png)
        (prediction,), skipped = predict_files(onnx_model, [png], topk=1)
        assert not skipped
        label, probability = prediction.top[0]
        assert result.label == label, f"frame {result.index}"
        assert result.confidence == pytest.approx(probability, abs=1e-4)
    with av.open(str(out)) as written:  # the annotated video is playable and holds the processed frames
        assert sum(1 for _ in written.decode(video=0)) == frames["written"] == len(results)


def test_every_artifact_kind_runs_live_as_predict_runs_it(clip, exported, tmp_path):
    """Checkpoint, ONNX, ExecuTorch, TorchScript, Core ML (interpreter): the live label and probability of a frame
    are those `mvkit predict` gives for it."""
    from mvkit.predict import predict_files

    video = decoded_frames(clip)
    for fmt, path in exported.items():
        results = list(live_run(path, clip, fps=1000, realtime=False, max_frames=3, size=96))
        assert [r.index for r in results] == [0, 1, 2], fmt
        for result in results:
            png = tmp_path / f"{fmt}-{result.index}.png"
            video[result.index].save(png)
            (prediction,), _ = predict_files(path, [png], topk=1)
            assert (result.label, result.confidence) == pytest.approx(prediction.top[0], abs=1e-4), fmt


def test_every_due_frame_is_processed_when_not_realtime(clip, onnx_model):
    engine = live_run(onnx_model, clip, fps=1000, realtime=False)
    assert len(list(engine)) == 90
    assert engine.summary()["frames"]["dropped"] == {"throttled": 0, "stale": 0}


class ScriptedSensor:
    """A CPU temperature sensor that reads a script of values (the last one repeats)."""

    name = "scripted"

    def __init__(self, readings: list[float]):
        self.readings = list(readings)

    def read_celsius(self) -> float:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_thermal_rate_steps_down_and_recovers_with_hysteresis():
    policy = ThermalRate(ScriptedSensor([70, 82, 85, 90, 90, 78, 76, 74, 70, 70]), hot_c=80, hysteresis_c=5,
                         step=0.25, min_fraction=0.25, check_every_s=1.0)
    fractions = []
    for second in range(10):
        policy.update(float(second))
        policy.update(second + 0.5)  # between checks: no reading, no change
        fractions.append(policy.fraction())
    # 70 ok; 82, 85, 90 hot: three steps down to the floor; 90 at the floor; 78, 76 inside the hysteresis band:
    # held; 74, 70, 70 cool: back up one step per check
    assert fractions == [1.0, 0.75, 0.5, 0.25, 0.25, 0.25, 0.25, 0.5, 0.75, 1.0]
    assert policy.throttle_events == 3


def test_hot_sensor_lowers_the_live_rate(clip, onnx_model):
    hot = ThermalRate(ScriptedSensor([95.0]), hot_c=80, step=0.25, min_fraction=0.5, check_every_s=0.0)
    engine = live_run(onnx_model, clip, fps=15, thermal=hot)
    processed = len(list(engine))
    summary = engine.summary()
    assert summary["policies"]["thermal"]["throttle_events"] == 2
    assert summary["fps"]["scheduled"] == pytest.approx(7.5, rel=0.01)
    assert processed < 30, "at half the rate most of the 3 s clip is throttled"
    assert [e["policy"] for e in summary["events"]] == ["thermal", "thermal"]


def test_thermal_zones_read_the_hottest_cpu_zone(tmp_path):
    from mvkit.live.policies import ThermalZones

    for name, kind, millidegrees in (("thermal_zone0", "acpitz", "45000"), ("thermal_zone1", "x86_pkg_temp", "81500"),
                                     ("thermal_zone2", "iwlwifi_1", "99000")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "temp").write_text(millidegrees + "\n")
    sensor = ThermalZones(tmp_path)
    assert sensor.read_celsius() == 81.5  # the wifi chip is not the CPU
    assert ThermalZones(tmp_path / "missing").read_celsius() is None


def test_rapl_energy_counter_with_wrap_around(tmp_path):
    from mvkit.live.metrics import EnergyMeter

    package, core = tmp_path / "intel-rapl:0", tmp_path / "intel-rapl:0:0"
    for domain in (package, core):
        domain.mkdir()
        (domain / "max_energy_range_uj").write_text("262143328850\n")
        (domain / "energy_uj").write_text("262140000000\n")
    meter = EnergyMeter(tmp_path)
    assert meter.available and meter.domains == [package]  # sub-domains are inside the package figure
    (package / "energy_uj").write_text("262143000000\n")
    assert meter.sample() == pytest.approx(3.0)  # 3,000,000 uJ
    (package / "energy_uj").write_text("1671150\n")  # wrapped: 328850 + 1 + 1671150 uJ = 2 J more
    assert meter.sample() == pytest.approx(5.000001)
    missing = EnergyMeter(tmp_path / "none")
    assert not missing.available and "no RAPL" in missing.reason


@pytest.mark.parametrize("device, supported, trained, size", [
    (Device(8, 16, low_power=True), None, 256, 192),
    (Device(2, 16, False), None, 256, 224),
    (Device(3, 8, False), None, 256, 224),
    (Device(8, 2, False), None, 256, 224),
    (Device(4, 4, False), None, 256, 256),
    (Device(1, 8, False), None, 256, 224),
    (Device(4, 4, False), None, 224, 224),  # a checkpoint never runs above the size it was trained at
    (Device(2, 16, False), None, 128, 128),
    (Device(8, 16, False), [192, 224], None, 224),  # wanted 256: the largest the artifact has below it
    (Device(8, 16, True), [224, 256], None, 224),  # wanted 192: nothing below, its smallest
])
def test_input_size_by_device_capability(device, supported, trained, size):
    from mvkit.live.policies import choose_input_size

    choice = choose_input_size(device, supported, trained=trained)
    assert choice.size == size
    assert f"{device.cores} cores" in choice.reason


def test_a_checkpoint_runs_live_at_its_training_size_not_above(flowers_checkpoint, clip):
    """The guide's 224 px for two cores would upscale a model trained at 96 px: slower, and less accurate."""
    engine = live_run(flowers_checkpoint, clip, fps=15, max_frames=1, device=Device(2, 16, False))
    result = next(iter(engine))
    assert result.size == engine.summary()["size"]["size"] == 96
    assert "trained at 96 px" in engine.summary()["size"]["reason"]


def test_size_choice_picks_among_core_ml_sizes_and_is_recorded(exported, flowers_subset, clip, tmp_path):
    if "coreml" not in exported:
        pytest.skip("coremltools not installed")
    from conftest import probe_checkpoint
    from mvkit.artifact import Artifact
    from mvkit.export import export

    # a model trained at 256 px, as MobileViT's ImageNet weights are: the guide's sizes are all below it
    package = export(probe_checkpoint(flowers_subset, 256, tmp_path / "at256.safetensors"), "coreml").path
    assert Artifact.load(package).extra["sizes"] == [192, 224, 256]
    for device, wanted in ((Device(2, 16, False), 224), (Device(8, 16, False), 256), (Device(8, 16, True), 192)):
        engine = live_run(package, clip, fps=15, max_frames=1, device=device)
        result = next(iter(engine))
        choice = engine.summary()["size"]
        assert result.size == choice["size"] == wanted, choice
        assert f"{device.cores} cores" in choice["reason"]
    # the fixture's model trained at 96 px: its package holds that size only, and stays at it on any device
    assert Artifact.load(exported["coreml"]).extra["sizes"] == [96]
    engine = live_run(exported["coreml"], clip, fps=15, max_frames=1, device=Device(8, 16, False))
    assert next(iter(engine)).size == 96 and "trained at 96 px" in engine.summary()["size"]["reason"]


def test_rate_limiter_takes_every_other_jittered_frame_and_never_outruns_the_model():
    from mvkit.live.scheduler import RateLimiter

    rng = np.random.default_rng(0)
    arrivals = np.arange(300) / 30 + rng.uniform(-0.004, 0.004, 300)
    limiter = RateLimiter(15)
    assert sum(limiter.accept(t) for t in arrivals) == 150
    slow = RateLimiter(15)
    slow.observe(0.2)  # the model needs 200 ms: schedule 5 fps, not 15
    assert sum(slow.accept(t) for t in arrivals) == pytest.approx(50, abs=1)


def test_latest_slot_keeps_one_frame():
    from mvkit.live.scheduler import LatestSlot

    slot = LatestSlot()
    assert slot.put("a") is None
    assert slot.put("b") == "a"  # replaced: the worker gets the newest only
    assert slot.take(0.01) == "b"
    assert slot.take(0.01) is None and not slot.closed
    slot.close()
    assert slot.closed and slot.take(0.01) is None


def test_prepared_buffer_matches_timm_transform(photos):
    from mvkit.live.prepare import FramePreparer
    from mvkit.preprocess import Preprocess

    preprocess = Preprocess(224, 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    image = Image.open(photos["coffee"]).convert("RGB")
    reused = FramePreparer(preprocess)
    first = reused(image)
    expected = preprocess.eval_transform()(image).unsqueeze(0).numpy()
    np.testing.assert_allclose(first, expected, atol=2e-6)
    assert reused(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) is first, "one buffer, reused"
    assert FramePreparer(preprocess, reuse=False)(image) is not FramePreparer(preprocess, reuse=False)(image)


def test_corrupt_frames_are_skipped_and_counted(flowers, onnx_model, tmp_path):
    """An MJPEG video with three frames' JPEG headers zeroed: three corrupt, the rest processed."""
    clean = tmp_path / "clean.avi"
    total = write_clip(clean, flower_photos(flowers, 12), fps=30, frames_each=4, codec="mjpeg")
    data = bytearray(clean.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == total
    for k in (5, 6, 30):
        data[starts[k] + 2:starts[k] + 200] = bytes(198)  # the JPEG's tables and frame header zeroed
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    engine = live_run(onnx_model, damaged, fps=1000, realtime=False)
    assert len(list(engine)) == total - 3
    assert engine.summary()["frames"]["corrupt"] == 3


@pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg command tags the clip's rotation")
def test_a_phone_video_filmed_upright_runs_upright(flowers, onnx_model, tmp_path):
    """A phone filming in portrait stores landscape frames and a rotation for the player: the model must see (and
    the annotated video show) the upright picture, as FFmpeg's own command line shows it, not the sideways one."""
    photos = flower_photos(flowers, 3)
    upright = [Image.open(p).convert("RGB").resize((120, 160)) for p in photos]
    sideways = tmp_path / "sideways.mp4"
    write_clip(sideways, photos, fps=10, frames_each=2, side=120, height=160,
               stored=lambda picture: picture.transpose(Image.Transpose.ROTATE_270))
    phone = tmp_path / "portrait.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(phone)], check=True)
    shown = tmp_path / "shown.png"  # the first frame as the ffmpeg command shows it (autorotate)
    subprocess.run([FFMPEG, "-v", "error", "-i", str(phone), "-frames:v", "1", str(shown)], check=True)

    from mvkit.live.sources import open_source
    frames = [frame.image for frame in open_source(phone, fps=10).frames(threading.Event())]
    assert len(frames) == 6 and {frame.size for frame in frames} == {(120, 160)}

    def far(a: Image.Image, b: Image.Image) -> float:
        return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())

    assert far(frames[0], Image.open(shown).convert("RGB")) < 2
    for frame, picture in zip(frames[::2], upright):
        assert far(frame, picture) < 8 < far(frame, picture.transpose(Image.Transpose.ROTATE_180)), "upside down"

    out = tmp_path / "annotated.mp4"
    results = list(live_run(onnx_model, phone, fps=1000, realtime=False, out=out))
    assert len(results) == 6
    with av.open(str(out)) as written:
        assert (written.streams.video[0].width, written.streams.video[0].height) == (120, 160)


def test_folder_of_photos_plays_as_frames_and_names_bad_files(flowers_subset, onnx_model, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(flowers_subset / "rose", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    engine = live_run(onnx_model, folder, fps=50)
    results = list(engine)
    summary = engine.summary()
    assert len(results) == 16 and summary["frames"]["corrupt"] == 1
    assert any("broken.jpg" in problem for problem in summary["source_problems"])
    assert sum(r.label == "rose" for r in results) >= 12


class PausingSource(Source):
    """Real photos, with a pause in the middle (a camera whose app went to the background)."""

    kind = "pausing"
    live = True

    def __init__(self, photos: list[Path], pause_s: float):
        super().__init__("pausing")
        self.photos, self.pause_s = photos, pause_s

    def frames(self, stop):
        for index, photo in enumerate(self.photos):
            if index == len(self.photos) // 2:
                time.sleep(self.pause_s)
            time.sleep(0.05)
            self.stats.read += 1
            yield Frame(index, Image.open(photo).convert("RGB"), time.monotonic(), time.monotonic())


def test_idle_release_unloads_and_reloads_with_warmup(flowers, onnx_model):
    from mvkit.artifact import Artifact
    from mvkit.runtime import load_predictor

    artifact = Artifact.load(onnx_model)
    loads = []

    def load():
        loads.append(time.monotonic())
        return load_predictor(onnx_model)

    photos = flower_photos(flowers, 10)
    engine = LiveRun(load, PausingSource(photos, pause_s=1.0), artifact.preprocess,
                     SizeChoice(artifact.preprocess.size, "test"), LiveOptions(fps=100, idle_release_s=0.4),
                     ThermalRate(None), {"artifact": str(onnx_model)})
    results = list(engine)
    summary = engine.summary()
    # frames that arrive while the model reloads replace each other in the slot (stale), as they should
    assert [r.index for r in results[:5]] == [0, 1, 2, 3, 4] and results[5].index == 5
    assert len(results) + summary["frames"]["dropped"]["stale"] == 10
    assert len(loads) == 2
    assert summary["policies"]["idle_release"]["releases"] == 1
    assert summary["policies"]["idle_release"]["reloads"] == 1
    assert [e["message"].split(":")[0] for e in summary["events"] if e["policy"] == "idle_release"] == \
        ["no frame for 0.4 s", "frames again"]


def open_when_served(open_run, within_s: float = 20.0):
    """The engine's first open is strict (a wrong URL fails at once), so wait here until ffmpeg listens."""
    from mvkit.errors import MvkitError

    deadline = time.monotonic() + within_s
    while True:
        try:
            return open_run()
        except MvkitError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is needed to serve a stream (apt-get install ffmpeg)")
def test_stream_on_loopback_that_drops_is_reconnected(flowers, onnx_model, tmp_path):
    clip = tmp_path / "feed.avi"
    write_clip(clip, flower_photos(flowers, 10), fps=15, frames_each=3, codec="mjpeg")
    url = f"http://127.0.0.1:{free_port()}/feed.mjpg"

    def serve():
        return subprocess.Popen([FFMPEG, "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
                                 "-c:v", "copy", "-f", "mpjpeg", "-listen", "1", url])

    server = serve()
    restarted: list[subprocess.Popen] = []
    try:
        engine = open_when_served(lambda: live_run(onnx_model, url, fps=15, duration_s=6.0))
        times = []

        def drop_and_come_back():
            time.sleep(1.5)
            server.kill()
            server.wait()
            time.sleep(1.5)
            restarted.append(serve())

        threading.Thread(target=drop_and_come_back, daemon=True).start()
        for result in engine:
            times.append(time.monotonic())
    finally:
        for process in [server, *restarted]:
            process.kill()
    summary = engine.summary()
    assert summary["reconnects"] >= 1
    gap = summary["gaps"][0]
    assert gap["recovered"] and gap["seconds"] >= 1.0
    assert summary["stopped_by"] == "duration"
    spacing = np.diff(times)
    assert spacing.max() >= 1.0, "the gap shows in the results"
    back = times[int(spacing.argmax()) + 1]
    assert sum(t >= back for t in times) > 10, "results go on after the reconnection"


@needs_chromium
def test_serve_page_in_a_real_browser(flowers, onnx_model, tmp_path):
    pytest.importorskip("selenium")
    from selenium.webdriver.support.ui import WebDriverWait

    clip = tmp_path / "long.mp4"
    write_clip(clip, flower_photos(flowers, 40), fps=15, frames_each=6, side=128)  # 16 s
    port = free_port()
    engine = live_run(onnx_model, clip, fps=15, serve=f"127.0.0.1:{port}")
    labels = set(json.loads(Path(str(onnx_model) + ".mvkit.json").read_text())["labels"])
    stop = threading.Event()

    def play():
        for _ in engine:
            if stop.is_set():
                break

    player = threading.Thread(target=play, daemon=True)
    player.start()
    browser = headless_chromium(tmp_path / "profile")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 30).until(lambda b: b.find_element("id", "label").text in labels)
        WebDriverWait(browser, 30).until(
            lambda b: b.execute_script("return document.getElementById('stream').naturalWidth") == 128)
        shown = browser.find_element("id", "label").text
        assert browser.find_element("id", "fps").text.endswith("fps")
        shot = tmp_path / "live_page.png"
        browser.save_screenshot(str(shot))
    finally:
        browser.quit()
        stop.set()
        player.join(timeout=20)
    assert shown in labels
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.std() > 10, "the screenshot shows the page and the frame, not a blank"


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mvkit.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_sigterm_stops_cleanly_with_a_playable_video(flowers, onnx_model, tmp_path):
    clip = tmp_path / "long.mp4"
    write_clip(clip, flower_photos(flowers, 30), fps=30, frames_each=10, side=128)  # 10 s
    out, metrics = tmp_path / "annotated.mp4", tmp_path / "metrics.json"
    process = run_cli(["live", onnx_model, "--source", clip, "--out", out, "--metrics", metrics, "--jsonl"])
    first = json.loads(process.stdout.readline())
    assert first["label"] and first["index"] == 0
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    summary = json.loads(metrics.read_text())
    assert summary["stopped_by"] == "interrupted"
    assert 5 < summary["frames"]["processed"] < 150
    with av.open(str(out)) as written:
        assert sum(1 for _ in written.decode(video=0)) == summary["frames"]["written"]
    assert "interrupted after" in stderr  # the summary: stdout holds JSON lines only (it came after them there)
    assert all(json.loads(line)["label"] for line in stdout.splitlines())
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_live_refuses_bad_input_before_any_work(onnx_model, clip, tmp_path, capsys):
    out = tmp_path / "never.mp4"
    cases = [
        (["--source", str(tmp_path / "missing.mp4")], "no such file or folder"),
        (["--source", str(clip), "--fps", "0"], "--fps must be positive"),
        (["--source", str(clip), "--size", "300"], "--size 300: the artifacts given take"),
        (["--source", str(clip), "--frames", "0"], "--frames must be at least 1"),
        (["--source", str(clip), "--warmup", "-2"], "--warmup must be 0 or more, not -2"),  # was a traceback
        (["--source", str(clip), "--idle-release", "-1"], "--idle-release must be positive, not -1.0"),
        (["--source", "rtsp://127.0.0.1:9/none"], "cannot open it"),
    ]
    for args, message in cases:
        assert cli_run(["live", str(onnx_model), *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, err
        assert err.count("error:") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_run(["live", str(onnx_model), "--source", str(clip), "--serve", f"127.0.0.1:{port}",
                        "--out", str(out)]) == 2
        assert "cannot listen there" in capsys.readouterr().err
    # a container H.264 cannot go in: it used to fail with PyAV's traceback at the first frame
    assert cli_run(["live", str(onnx_model), "--source", str(clip), "--out", str(tmp_path / "clip.gif")]) == 2
    assert "--out" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a refused run leaves no file"


def test_the_caption_fits_small_frames_by_shortening_the_label_first(flowers_subset):
    from PIL import ImageDraw

    from mvkit.live.overlay import _caption, _font, annotate

    photo = Image.open(next((flowers_subset / "rose").iterdir())).convert("RGB")  # 128 px, as a phone's preview
    label = "limpkin, Aramus pictus"  # an ImageNet label: longer than a small frame
    for side in (64, 128, 320, 640):
        frame = photo.resize((side, side))
        draw, font = ImageDraw.Draw(frame), _font(side, side)
        caption = _caption(draw, font, side - 4, label, "4%", "8.8 fps", "241 ms")
        assert draw.textlength(caption, font=font) <= side - 4, (side, caption)
        assert caption.startswith("limpkin") and "4%" in caption, (side, caption)
        assert annotate(frame, label, 0.04, 8.8, 240.8).size == frame.size
