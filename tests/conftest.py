"""Shared fixtures: real photos and real pretrained weights; tests that need ../shared/data skip without it."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from mvkit.runtime.base import usable_cores

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MVKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
FLOWERS = SHARED_DATA / "flowers128"


def pin_xdist_worker() -> None:
    """Under pytest-xdist (the suite runs `-n 2`), each worker and every process it starts keeps to its own share
    of the cores, so that the runtimes, which take one thread per usable core, never run more threads than cores:
    on 2 cores, two workers of 2 spinning threads each made the demo test at least three times slower."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) % count::count] or cores)


pin_xdist_worker()
torch.set_num_threads(min(2, usable_cores()))

# Small copies of large photos go to a folder of this run's (and of the mvkit processes it starts), not the home's.
if "MVKIT_PHOTO_CACHE" not in os.environ:
    os.environ["MVKIT_PHOTO_CACHE"] = tempfile.mkdtemp(prefix="mvkit-photo-cache-")
    atexit.register(shutil.rmtree, os.environ["MVKIT_PHOTO_CACHE"], ignore_errors=True)

# The Ctrl-C tests stand for a user at a terminal, where SIGINT is not ignored. A suite started in the
# background (`nohup ... &`) inherits SIGINT ignored, and so would every mvkit process it starts: undo that.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")


def headless_chromium(profile: Path, window: str = "900,700"):
    """Debian's chromium through Selenium and chromedriver, with the flags this closed network needs, and the
    browser console log kept."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="session")
def flowers() -> Path:
    if not FLOWERS.is_dir():
        pytest.skip(f"real flower photos not found at {FLOWERS}")
    return FLOWERS


@pytest.fixture(scope="session")
def flowers_subset(flowers: Path, tmp_path_factory) -> Path:
    """A small copy of flowers128: the first 16 photos of each class, for fast tests."""
    root = tmp_path_factory.mktemp("flowers_subset")
    for class_dir in sorted(p for p in flowers.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir()
        for photo in sorted(class_dir.glob("*.jpg"))[:16]:
            shutil.copy(photo, root / class_dir.name / photo.name)
    return root


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """The sample photos shipped with mvkit (scikit-image's coffee and chelsea)."""
    from mvkit.demo import sample_photos

    return {p.stem: p for p in sample_photos()}


@pytest.fixture(scope="session")
def lite0():
    """The real ImageNet-pretrained EfficientNet-Lite0 (built-in weights, offline)."""
    from mvkit.models import create_model

    return create_model("tf_efficientnet_lite0", pretrained=True)


@contextlib.contextmanager
def serve_folder(folder: Path):
    """A real HTTP server on loopback serving `folder`; yields its base URL."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def probe_checkpoint(data: Path, size: int, path: Path) -> Path:
    """The real ImageNet-pretrained EfficientNet-Lite0 with its head fitted on `data`'s training photos."""
    from mvkit.data import load_data
    from mvkit.models import create_model, save_checkpoint, set_preprocess
    from mvkit.train import fit_linear_head

    torch.manual_seed(0)
    splits = load_data(data)
    model = create_model("tf_efficientnet_lite0", pretrained=True, labels=splits.classes)
    set_preprocess(model, size=size, crop_pct=1.0)
    fit_linear_head(model, splits.train)
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="session")
def flowers_checkpoint(flowers_subset, tmp_path_factory) -> Path:
    """EfficientNet-Lite0 (real ImageNet weights) with a head fitted on real flower photos, at 96 px."""
    return probe_checkpoint(flowers_subset, 96, tmp_path_factory.mktemp("export") / "flowers.safetensors")


# What third-party libraries print when they reach the terminal: glog lines (torch, ExecuTorch), tqdm bars
# (coremltools), ONNX Runtime's calibration prints, Python warnings.
THIRD_PARTY = re.compile(r"^[IWEF]\d{4} |it/s\]|ops/s\]|passes/s\]|cpuinfo|Warning|warnings\.warn|Collecting tensor "
                         r"data|Finding optimal threshold|Number of tensors|Traceback", re.M)


@pytest.fixture(scope="session")
def exported(flowers_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The fine-tuned checkpoint (a copy) and its export to every installed format, made by a real
    `mvkit export -f all` process, whose output must hold mvkit's lines only: format name -> artifact path
    (tests copy what they change)."""
    from mvkit.formats import FORMATS, available_formats

    folder = tmp_path_factory.mktemp("exported")
    checkpoint = folder / "flowers.safetensors"
    shutil.copy(flowers_checkpoint, checkpoint)
    shutil.copy(str(flowers_checkpoint) + ".mvkit.json", str(checkpoint) + ".mvkit.json")
    shown = subprocess.run([sys.executable, "-m", "mvkit.cli", "export", str(checkpoint), "-f", "all"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert not THIRD_PARTY.search(shown.stdout + shown.stderr), shown.stdout + shown.stderr
    assert shown.stderr == ""
    formats = available_formats()
    assert [line.split(":")[0] for line in shown.stdout.splitlines() if not line.startswith(" ")] == formats
    return {"safetensors": checkpoint, **{fmt: folder / f"flowers{FORMATS[fmt].suffix}" for fmt in formats}}


def assert_runs_without(command: list[str], modules: tuple[str, ...]) -> None:
    """`mvkit COMMAND --json` in a fresh process succeeds without importing any of `modules`."""
    probe = ("import json, sys\n"
             "from mvkit.cli import run\n"
             f"code = run({command + ['--json']!r})\n"
             f"print(json.dumps([code] + [name in sys.modules for name in {modules!r}]))\n")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == [0] + [False] * len(modules), \
        (command, shown.stderr[-2000:])
