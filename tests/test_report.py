"""mvkit report over real results (a training run, a benchmark, a live run), opened in a real browser."""

from __future__ import annotations

import json
import shutil
from html import unescape
from pathlib import Path

import pytest

from conftest import headless_chromium, needs_chromium
from mvkit.cli import run as cli_run

GUIDE_TABLES = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "guide_tables.json"


@pytest.fixture(scope="module")
def results(flowers_subset, exported, tmp_path_factory) -> Path:
    """Real results: a 1-epoch training run, a benchmark of the exported ONNX file, a live run's metrics."""
    from mvkit.bench import add_accuracy, bench, write_results
    from mvkit.data import load_data
    from mvkit.live import run as live_run
    from mvkit.train import train
    from mvkit.train.recipe import build_recipe

    root = tmp_path_factory.mktemp("results")
    train(build_recipe("head-only", model="tf_efficientnet_lite0", data=str(flowers_subset), out=str(root / "train"),
                       epochs=1, img_size=64, batch_size=16))
    photos = [load_data(flowers_subset).val.image(i) for i in range(4)]
    rows = bench([exported["safetensors"], exported["onnx"]], photos, rounds=3, measure_memory=False)
    add_accuracy(rows, str(flowers_subset))
    write_results(rows, root / "bench")
    from mvkit.verify import verify

    (root / "verify").mkdir()
    (root / "verify" / "verify.json").write_text(json.dumps(verify(exported["onnx"], str(flowers_subset), limit=20).to_dict()))
    if GUIDE_TABLES.exists():  # the committed results of benchmarks/guide_tables.py
        shutil.copy(GUIDE_TABLES, root / "guide_tables.json")
    assert cli_run(["eval", str(exported["safetensors"]), str(flowers_subset), "--out", str(root / "eval")]) == 0
    folder = root / "photos"
    shutil.copytree(flowers_subset / "daisy", folder)
    for _ in live_run(exported["onnx"], folder, fps=100, metrics_path=root / "live.json"):
        pass
    return root


def shown_numbers(html: str) -> list[tuple[str, str, str]]:
    """(source file, key, text) of every table cell that names where it came from."""
    import re

    return [tuple(map(unescape, cell))
            for cell in re.findall(r'<td data-source="([^"]+)" data-key="([^"]+)">([^<]*)</td>', html)]


def value_at(data, key: str):
    for part in key.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_report_numbers_equal_their_results_files(results, tmp_path):
    out = tmp_path / "report.html"
    assert cli_run(["report", str(results), "--out", str(out)]) == 0
    html = out.read_text()
    for title in ("Training: train", "Benchmark: bench", "Live run: live", "Verification: verify", "Evaluation: eval"):
        assert title in html
    assert {key for _, key, _ in shown_numbers(html) if key.startswith("per_class/")} == {
        f"per_class/{name}" for name in ("daisy", "dandelion", "rose", "sunflower", "tulip")}
    if GUIDE_TABLES.exists():
        for table in json.loads(GUIDE_TABLES.read_text())["tables"]:
            shown = unescape(html)
            assert table["title"] in shown and all(note in shown for note in table["notes"]), table["title"]
    cells = shown_numbers(html)
    assert len(cells) > 30
    checked = percentages = 0
    for source, key, text in cells:
        value = value_at(json.loads(Path(source).read_text()), key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and text.endswith("%"):
            assert float(text[:-1]) / 100 == pytest.approx(value, abs=5e-5), (source, key, text)  # fractions
            percentages += 1
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            assert float(text) == pytest.approx(value, rel=1e-3), (source, key, text)
            checked += 1
        elif isinstance(value, str) and key.split("/")[-1] in ("artifact", "reference"):
            assert text == Path(value).name  # paths by file name: the page stays as wide as the window
        elif isinstance(value, str):
            assert text == value
    assert checked > 20 and percentages > 10
    assert "http://" not in html and "https://" not in html, "self-contained: nothing fetched at view time"


def test_runs_in_folders_of_one_name_are_told_apart_and_a_run_given_twice_is_shown_once(results, tmp_path):
    """The training runs of `mvkit compare` all sit in folders named train: each title says which one it is."""
    import re

    shutil.copytree(results / "train", tmp_path / "second" / "train")
    out = tmp_path / "report.html"
    assert cli_run(["report", str(results), str(tmp_path / "second"), str(results / "train"), "--out", str(out)]) == 0
    titles = re.findall(r"<h2>(Training: [^<]*)</h2>", out.read_text())
    assert sorted(titles) == sorted([f"Training: {results.name}/train", "Training: second/train"])


def test_a_damaged_results_file_is_named_and_left_out_while_the_rest_is_reported(results, tmp_path, caplog):
    """A cut bench.json or a hand-edited compare.json was a TypeError traceback, or vanished without a word."""
    damaged = tmp_path / "damaged"
    (damaged / "cut").mkdir(parents=True)
    (damaged / "cut" / "bench.json").write_text('[{"artifact": "a.onnx", "latency_p50_ms": ')
    (damaged / "edited").mkdir()
    (damaged / "edited" / "compare.json").write_text('{"rows": 5, "budget": "1 epoch"}')
    photo = tmp_path / "notes.json"
    photo.write_text('{"author": "me"}')  # given by name but holds no results
    out = tmp_path / "report.html"
    with caplog.at_level("WARNING"):
        assert cli_run(["report", str(results / "train"), str(damaged), str(photo), "--out", str(out)]) == 0
    err = caplog.text
    assert "bench.json is not readable JSON" in err and "compare.json is damaged" in err
    assert "notes.json holds no mvkit results" in err and err.count("left out of the report") == 3, err
    assert "Training: train" in out.read_text()


def test_report_refuses_what_holds_no_results(tmp_path, capsys):
    (tmp_path / "notes.json").write_text("{}")
    assert cli_run(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "no mvkit results found" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@needs_chromium
def test_report_in_a_real_browser(results, tmp_path):
    out = tmp_path / "report.html"
    assert cli_run(["report", str(results), "--out", str(out)]) == 0
    browser = headless_chromium(tmp_path / "profile", window="1200,900")
    try:
        browser.get(out.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        browser.save_screenshot(str(tmp_path / "report.png"))
    finally:
        browser.quit()
    assert images and all(loaded for _, loaded in images), images
    assert {"curves.png"} <= {alt for alt, _ in images}
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000
