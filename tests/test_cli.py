import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import THIRD_PARTY
from mvkit.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
COMMANDS = ["models", "predict", "eval", "train", "export", "verify", "bench", "compare", "live", "report", "scan",
            "demo"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 200


def test_help_texts_survive_rich_markup():
    """Typer renders help as Rich markup, where an unescaped "[ray]" is a style tag and vanishes."""
    from rich.text import Text
    import typer.main

    group = typer.main.get_command(app)
    texts = [group.help]
    for command in group.commands.values():
        texts.append(command.help)
        texts.extend(param.help for param in command.params if getattr(param, "help", None))
    for text in filter(None, texts):
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text


def test_user_errors_print_one_line_and_exit_2_without_traceback(tmp_path):
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "mvkit.cli", "predict", "mobilevit_xxx", str(tmp_path)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "error:" in result.stderr and "mobilevit_xxs" in result.stderr  # suggests the close name
    assert "Traceback" not in result.stderr


def test_a_bad_train_option_is_one_error_line_before_any_work(tmp_path):
    env = dict(os.environ, COLUMNS="200")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "mvkit.cli", "train", "mobilevit_xxs", "builtin:fashion", "--preset", "scratch",
                             "--auto-augment", "rand-m9-zz3", "--out", str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rand-m9-zz3" in errors[0] and "timm policy" in errors[0]
    assert not out.exists()  # checked before the data is read or a folder is made


def test_models_json_and_scan_exit_codes(tmp_path, photos, capsys):
    rows = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert {"name", "params_m", "gmacs", "input_size", "mean", "std", "weights"} <= set(rows[0])
    (tmp_path / "README.txt").write_text("where these photos come from")
    from mvkit.cli import run

    assert run(["scan", str(tmp_path)]) == 2
    assert "holds no photos, only other files (README.txt)" in capsys.readouterr().err
    (tmp_path / "coffee.jpg").write_bytes(photos["coffee"].read_bytes())
    result = runner.invoke(app, ["scan", str(tmp_path), "--json"])  # a README beside the photos is no failure
    assert result.exit_code == 0 and json.loads(result.stdout)["not_photos"][0].endswith("README.txt")
    (tmp_path / "a.jpg").write_text("not a photo")
    result = runner.invoke(app, ["scan", str(tmp_path), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["bad"][0]["path"].endswith("a.jpg")
    # a CSV manifest, as train reads it: the photos it lists are checked, one that is not there fails the scan
    manifest = tmp_path / "photos.csv"
    manifest.write_text("path,label\ncoffee.jpg,drink\ncoffee.jpg,drink\ngone.jpg,drink\n")
    result = runner.invoke(app, ["scan", str(manifest), "--json"])
    scanned = json.loads(result.stdout)
    assert result.exit_code == 1 and scanned["ok"] == 1, result.stdout
    assert [Path(bad["path"]).name for bad in scanned["bad"]] == ["gone.jpg"] and "missing" in scanned["bad"][0]["reason"]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, flags=re.S)
    assert len(commands) >= 2
    main_job, tests = commands[0].strip(), commands[1].strip()
    assert "mvkit demo" in main_job
    assert tests in (REPO / ".ci" / "run").read_text()


def test_demo_runs_the_main_job_on_builtin_data(tmp_path):
    """`mvkit demo` itself: its results are right and its whole output holds no third-party line."""
    shown = subprocess.run([sys.executable, "-m", "mvkit.cli", "demo", "--out", str(tmp_path)], capture_output=True,
                           text=True, env=dict(os.environ, COLUMNS="200"))
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert not THIRD_PARTY.search(shown.stdout + shown.stderr), shown.stdout + shown.stderr
    assert "espresso" in shown.stdout and "| fashion_lite0.int8.onnx | onnx |" in shown.stdout
    # 28 px photos: trained at 64 px, which is no native size (the line used to call it one)
    assert "input 64 px, the smallest size mvkit trains at, near the photos' size (short side 28 px" in \
        shown.stdout + shown.stderr
    result = json.loads((tmp_path / "demo.json").read_text())
    coffee = next(p for p in result["photo_predictions"] if p["path"].endswith("coffee.jpg"))
    assert coffee["top"][0]["label"] == "espresso"
    assert result["metrics"]["count"] == 1000
    # the default preset, 3 epochs at 64 px: measured 0.847 (a linear probe at 96 px: 0.834)
    assert result["metrics"]["top1"] > 0.82
    recipe = yaml.safe_load((tmp_path / "train" / "recipe.yaml").read_text())
    assert (recipe["preset"], recipe["epochs"], recipe["img_size"]) == ("finetune", 3, 64)
    assert Path(result["confusion_png"]).exists() and Path(result["checkpoint"]).exists()
    correct = sum(Path(p["path"]).stem.split("_", 1)[1] == p["top"][0]["label"] for p in result["sample_predictions"])
    assert len(result["sample_predictions"]) == 5 and correct >= 3
    reports = {Path(r["artifact"]).name: r for r in result["verify_reports"]}
    assert reports["fashion_lite0.onnx"]["agreement"] == 1.0
    assert reports["fashion_lite0.torchscript.pt"]["agreement"] == 1.0
    int8 = reports["fashion_lite0.int8.onnx"]
    assert int8["count"] == 1000  # all val photos: on 500, chance put int8 files across their 1-point budget
    assert int8["artifact_top1"] >= int8["reference_top1"] - 0.02  # measured: 84.3% vs 84.7%
    assert "| fashion_lite0.int8.onnx | onnx | " in result["bench_table"]
    # each verify line's verdict is its bench row's status: one rule (an int8 file in its budget was
    # "below 99%" in one place and shipped in the other)
    statuses = {Path(row["artifact"]).name: row["status"] for row in
                json.loads((tmp_path / "bench.json").read_text())}
    for name, status in statuses.items():
        verdict = re.search(rf"^verify {re.escape(name)}: .* - (.*)$", shown.stdout, flags=re.M).group(1)
        assert verdict == "PASS" if status == "verified" else verdict.startswith(f"{status}: top-1 "), (name, verdict)
    report = (tmp_path / "report.html").read_text()  # the demo ends with its report
    assert f"report: {tmp_path / 'report.html'}" in shown.stdout
    assert "Evaluation: " in report and "Benchmark: " in report and "data:image/png;base64" in report
    assert "Verification: " in report and 'data-key="0/max_abs_prob_diff"' in report  # each artifact's parity
    assert report.count("<h2>Training: train</h2>") == 1  # the fine-tune's curves, once
    if importlib.util.find_spec("executorch"):
        assert reports["fashion_lite0.pte"]["agreement"] == 1.0
        pte_int8 = reports["fashion_lite0.ptq-int8.pte"]
        assert pte_int8["artifact_top1"] >= pte_int8["reference_top1"] - 0.02  # measured: 84.2% vs 85.2%
    if importlib.util.find_spec("coremltools"):
        coreml = reports["fashion_lite0.mlpackage"]  # fp16, numbers from the interpreter off macOS
        assert coreml["problems"] == [] and coreml["agreement"] >= 0.99


def test_output_piped_into_head_ends_quietly(flowers, flowers_checkpoint):
    """`mvkit predict ... | head` closes the pipe early: that used to print two screens of BrokenPipeError."""
    job = subprocess.Popen([sys.executable, "-m", "mvkit.cli", "predict", str(flowers_checkpoint),
                            str(flowers / "rose"), "-k", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = job.stdout.readline()
    job.stdout.close()  # as head does after its lines
    _, err = job.communicate(timeout=300)
    assert first.strip().endswith(b".jpg")
    assert job.returncode == 1 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]


def in_a_terminal(command: list[str]) -> str:
    """What a command shows in a terminal (a pseudo-terminal, so rich draws its progress bars)."""
    import pty

    leader, follower = pty.openpty()
    job = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                           env=dict(os.environ, COLUMNS="120"))
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert job.wait(timeout=300) == 0, shown.decode(errors="replace")[-2000:]
    return shown.decode(errors="replace")


def test_predicting_a_folder_shows_progress_in_a_terminal_and_a_photo_does_not(exported, flowers_subset):
    """A folder of phone photos takes up to a second a photo to decode: the terminal shows how far along it is
    (the bar goes when the answers print); a single photo, and output into a pipe, get none."""
    command = [sys.executable, "-m", "mvkit.cli", "predict", str(exported["onnx"])]
    folder = in_a_terminal(command + [str(flowers_subset), "-k", "1"])
    assert "predicting" in folder and "80/80" in folder
    assert folder.count("%  ") >= 80  # and the answers
    one = in_a_terminal(command + [str(next((flowers_subset / "rose").glob("*.jpg")))])
    assert "predicting" not in one and "rose" in one
    piped = subprocess.run(command + [str(flowers_subset), "-k", "1"], capture_output=True, text=True)
    assert piped.returncode == 0 and "predicting" not in piped.stdout + piped.stderr


def test_progress_bar_without_a_count_shows_no_made_up_count_or_time_left():
    """A dynamic quantization or a conversion has no count: rich's own columns print "0/?" and "-:--:--" there."""
    from rich.console import Console
    from rich.progress import Progress

    from mvkit.cli import bar_columns

    console = Console(record=True, width=100, force_terminal=False)
    progress = Progress(*bar_columns(), console=console)
    progress.add_task("dynamic torchscript", total=None)
    progress.add_task("ptq onnx", total=256, completed=64)
    console.print(progress.make_tasks_table(progress.tasks))
    uncounted, counted = console.export_text().splitlines()
    assert "dynamic torchscript" in uncounted and "?" not in uncounted and "-:--:--" not in uncounted
    assert "64/256" in counted and "0:00:00" in counted
