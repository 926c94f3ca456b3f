"""Batch prediction into a file (`mvkit predict MODEL INPUT --out ...`): on every photo of flowers128 plus corrupt
files, the local engine and the Ray engine (a real local Ray instance) give the rows `mvkit predict` prints, with
the same error rows; a job killed mid-way resumes without losing or doubling a row."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mvkit.batch import predict_to_file
from mvkit.batch.outputs import read_rows

CLI = [sys.executable, "-m", "mvkit.cli"]


@pytest.fixture(scope="module")
def library(flowers, tmp_path_factory) -> Path:
    """A copy of all of flowers128's photos with corrupt files added (as a real photo library has)."""
    folder = tmp_path_factory.mktemp("library") / "photos"
    shutil.copytree(flowers, folder, ignore=shutil.ignore_patterns("*.txt"))
    first = next((folder / "daisy").glob("*.jpg"))
    (folder / "daisy" / "zz_truncated.jpg").write_bytes(first.read_bytes()[:400])
    (folder / "rose" / "not_a_photo.png").write_text("a text file with a photo's name")
    (folder / "tulip" / "empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def small_library(library, tmp_path_factory) -> Path:
    """About 500 of those photos (every seventh) with the same corrupt files: for the stop-and-resume runs."""
    folder = tmp_path_factory.mktemp("small_library") / "photos"
    for i, photo in enumerate(sorted(library.rglob("*.*"))):
        if i % 7 == 0 or photo.name in ("zz_truncated.jpg", "not_a_photo.png", "empty.jpg"):
            (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, folder / photo.parent.name / photo.name)
    return folder


@pytest.fixture(scope="module")
def model(flowers_checkpoint, tmp_path_factory) -> Path:
    from mvkit.artifact import sidecar_path

    folder = tmp_path_factory.mktemp("batch_model")
    shutil.copy(flowers_checkpoint, folder / "flowers.safetensors")
    shutil.copy(sidecar_path(flowers_checkpoint), sidecar_path(folder / "flowers.safetensors"))
    return folder / "flowers.safetensors"


@pytest.fixture(scope="module")
def expected(model, library) -> tuple[dict[str, list], dict[str, str]]:
    """What `mvkit predict` (no --out) answers: path -> top-3 (label, probability), and path -> skip reason."""
    from mvkit.predict import predict_files

    predictions, skipped = predict_files(model, [library], topk=3)
    return ({str(p.path): p.top for p in predictions}, {str(path): reason for path, reason in skipped})


def check_rows(rows: list[dict], expected, count: int = 3482 + 3) -> None:
    answers, errors = expected
    assert len(rows) == len(answers) + len(errors) == count
    assert len({row["path"] for row in rows}) == len(rows), "a row is doubled"
    for row in rows:
        if row["error"]:
            assert row["path"] in errors and row["label_1"] is None
            continue
        top = answers[row["path"]]
        assert [row[f"label_{i}"] for i in (1, 2, 3)] == [label for label, _ in top]
        # batches are formed differently around the error rows, so float32 sums may differ in their last bits,
        # and the rows round to 6 decimals: 1e-5 (2e-6 failed once at a rounding boundary)
        assert [row[f"probability_{i}"] for i in (1, 2, 3)] == pytest.approx([p for _, p in top], abs=1e-5)
    assert {row["path"] for row in rows if row["error"]} == set(errors)
    assert len(errors) == 3


def test_local_engine_matches_mvkit_predict_on_all_of_flowers128(model, library, expected, tmp_path):
    out = tmp_path / "predictions.parquet"
    summary = predict_to_file(model, str(library), out, workers=2, topk=3)
    assert summary.written == 3485 and summary.errors == 3
    check_rows(read_rows(out), expected)
    assert not out.with_name(out.name + ".parts").exists()
    again = predict_to_file(model, str(library), out, workers=2, topk=3)  # a finished job: nothing is redone
    assert again.written == 0 and again.skipped_done == 3485
    check_rows(read_rows(out), expected)


def test_ray_engine_matches_on_a_local_ray_cluster(model, library, expected, tmp_path):
    pytest.importorskip("ray", reason="Ray extra not installed")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a real local cluster, on loopback
    try:
        out = tmp_path / "predictions.jsonl"
        summary = predict_to_file(model, str(library), out, engine="ray", workers=2, topk=3)
        assert summary.written == 3485 and summary.errors == 3
        check_rows(read_rows(out), expected)
    finally:
        ray.shutdown()


def wait_for(condition, job: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert job.poll() is None, "the job ended before it could be stopped"
        assert time.time() < deadline, "the job made no progress"
        time.sleep(0.2)


@pytest.mark.parametrize("suffix,stop", [(".csv", signal.SIGKILL), (".parquet", signal.SIGKILL),
                                         (".jsonl", signal.SIGINT)])
def test_a_job_stopped_mid_way_resumes_without_losing_or_doubling_rows(model, small_library, tmp_path, suffix, stop):
    from mvkit.predict import predict_files

    predictions, skipped = predict_files(model, [small_library], topk=3)
    expected = ({str(p.path): p.top for p in predictions}, {str(path): reason for path, reason in skipped})
    count = len(predictions) + len(skipped)
    out = tmp_path / f"predictions{suffix}"
    command = [*CLI, "predict", str(model), str(small_library), "--out", str(out), "-k", "3", "--workers", "1",
               "--batch-size", "8"]
    parts = out.with_name(out.name + ".parts")

    def written() -> int:
        if suffix == ".parquet":
            return len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
        return out.stat().st_size if out.exists() else 0

    # a Parquet part every second (10 s by default), so the job is stopped with most of the photos still to do
    env = dict(os.environ, MVKIT_PARQUET_PART_SECONDS="1")
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: written() >= (1 if suffix == ".parquet" else 5_000), job)
    job.send_signal(stop)
    job.wait(timeout=60)
    partial = read_rows(out) if out.exists() else []
    if stop == signal.SIGINT:  # Ctrl-C: the partial file is valid and holds what was done
        assert 0 < len(partial) < count and job.returncode != 0
    done_before = len(partial) if suffix != ".parquet" else None
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    assert finished.returncode == 0, finished.stderr
    if done_before:
        assert f"{done_before} already done before" in finished.stdout.replace("\n", " ")
    check_rows(read_rows(out), expected, count)


def test_a_second_job_into_the_same_file_is_refused_while_the_first_runs(model, small_library, tmp_path):
    """Two jobs appending to one file would both start where it ends and write the same rows twice."""
    from mvkit.predict import predict_files

    out = tmp_path / "predictions.csv"
    command = [*CLI, "predict", str(model), str(small_library), "--out", str(out), "-k", "3", "--workers", "1",
               "--batch-size", "8"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: out.exists() and out.stat().st_size > 2_000, first)
    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith("error:") and f"is being written by another mvkit predict (pid {first.pid})" \
        in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    predictions, skipped = predict_files(model, [small_library], topk=3)
    check_rows(read_rows(out), ({str(p.path): p.top for p in predictions}, {str(p): r for p, r in skipped}),
               len(predictions) + len(skipped))
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "the lock goes with the job"


def test_bad_jobs_are_refused_before_any_work(model, library, tmp_path):
    cases = [([str(model), str(library), "--out", str(tmp_path / "p.xlsx")], "write .parquet, .csv or .jsonl"),
             ([str(model), str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")], "does not exist"),
             ([str(model), str(library), "--out", str(tmp_path / "p.csv"), "--engine", "spark"], "--engine")]
    with socket.socket() as closed:  # a port where nothing listens: ray.init retried it for minutes at 0 done
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cases += [([str(model), str(library), "--out", str(tmp_path / "p.csv"), "--engine", "ray", "--address",
                f"127.0.0.1:{port}"], "no Ray cluster answers there"),
              ([str(model), str(library), "--out", str(tmp_path / "p.csv"), "--address", f"127.0.0.1:{port}"],
               "give it with --engine ray")]
    for arguments, needle in cases:
        shown = subprocess.run([*CLI, "predict", *arguments], capture_output=True, text=True)
        assert shown.returncode == 2 and shown.stderr.startswith("error:") and needle in shown.stderr, shown.stderr
    assert not list(tmp_path.iterdir())
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join(str(p) for p in sorted((library / "rose").glob("*.jpg"))[:5]) + "\n")
    out = tmp_path / "five.jsonl"
    predict_to_file(model, str(manifest), out, workers=0, topk=1)
    assert [row["path"] for row in read_rows(out)] == manifest.read_text().split()
    other = tmp_path / "other.txt"
    other.write_text("\n".join(str(p) for p in sorted((library / "tulip").glob("*.jpg"))[:6]) + "\n")
    from mvkit.errors import MvkitError

    with pytest.raises(MvkitError, match="another input"):
        predict_to_file(model, str(other), out, workers=0, topk=1)
    assert json.loads(out.read_text().splitlines()[0])["path"].endswith(".jpg")


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_a_file_another_model_wrote_is_not_appended_to(model, library, tmp_path, suffix):
    """Resuming with retrained weights would mix two models' answers in one file without a word."""
    import torch

    from mvkit.errors import MvkitError
    from mvkit.models import load_checkpoint, save_checkpoint

    photos = sorted((library / "rose").glob("*.jpg"))
    first, longer = tmp_path / "first.txt", tmp_path / "longer.txt"
    first.write_text("\n".join(map(str, photos[:4])) + "\n")
    longer.write_text("\n".join(map(str, photos[:8])) + "\n")
    out = tmp_path / f"predictions{suffix}"
    predict_to_file(model, str(first), out, workers=0, topk=2)
    written = out.read_bytes()

    retrained = load_checkpoint(model)
    with torch.no_grad():
        retrained.get_classifier().weight.mul_(1.1)  # a little surer of everything, as more training makes it
    save_checkpoint(retrained, tmp_path / "retrained.safetensors")
    with pytest.raises(MvkitError, match="written by another model"):
        predict_to_file(tmp_path / "retrained.safetensors", str(longer), out, workers=0, topk=2)
    shorter = tmp_path / "shorter.txt"
    shorter.write_text("\n".join(map(str, photos[:2])) + "\n")
    with pytest.raises(MvkitError, match="the input has fewer photos"):
        predict_to_file(model, str(shorter), out, workers=0, topk=2)
    assert out.read_bytes() == written  # and no parts folder or other file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "first.txt", "longer.txt", "shorter.txt", out.name, "retrained.safetensors",
        "retrained.safetensors.mvkit.json"])

    summary = predict_to_file(model, str(longer), out, workers=0, topk=2)  # the same model carries on
    assert (summary.skipped_done, summary.written) == (4, 4)
    assert [row["path"] for row in read_rows(out)] == list(map(str, photos[:8]))


def test_manifest_paths_are_relative_to_the_manifest_as_in_training(model, library, tmp_path, monkeypatch):
    """A manifest made beside its photos (Excel's UTF-8 CSV starts with a byte-order mark) works from any folder."""
    photos = sorted((library / "tulip").glob("*.jpg"))[:3]
    shutil.copytree(library / "tulip", tmp_path / "lists" / "tulip", ignore=lambda d, names: [
        n for n in names if n not in {p.name for p in photos}])
    (tmp_path / "lists" / "photos.csv").write_text(
        "\ufeffpath,note\r\n" + "".join(f"tulip/{p.name},x\r\n" for p in photos), encoding="utf-8")
    (tmp_path / "lists" / "photos.txt").write_text("".join(f"tulip/{p.name}\n" for p in photos))
    monkeypatch.chdir(library)  # somewhere else, with a tulip folder of its own
    for manifest in ("photos.csv", "photos.txt"):
        out = tmp_path / f"{manifest}.jsonl"
        predict_to_file(model, str(tmp_path / "lists" / manifest), out, workers=0, topk=1)
        rows = read_rows(out)
        assert [row["path"] for row in rows] == [str(tmp_path / "lists" / "tulip" / p.name) for p in photos]
        assert all(row["error"] is None and row["label_1"] for row in rows)


def test_a_manifest_of_urls_is_predicted_row_by_row(model, library, tmp_path):
    """Photos on a web server (a real one, on loopback), named in a .txt list beside local paths."""
    from conftest import serve_folder

    photos = sorted((library / "daisy").glob("*.jpg"))[:3]
    with serve_folder(library / "daisy") as base:
        urls = [f"{base}/{photos[0].name}", f"{base}/{photos[1].name}", f"{base}/gone.jpg"]
        (tmp_path / "list.txt").write_text("\n".join([*urls, str(photos[2])]) + "\n")
        predict_to_file(model, str(tmp_path / "list.txt"), tmp_path / "p.jsonl", workers=1, topk=1)
    rows = read_rows(tmp_path / "p.jsonl")
    assert [row["path"] for row in rows] == [*urls, str(photos[2])]
    assert [row["error"] for row in rows] == [None, None, "download failed: HTTP 404 File not found", None]
    from mvkit.predict import predict_files

    local, _ = predict_files(model, photos[:2], topk=1)  # the same numbers as the photos read from disk
    assert [(row["label_1"], row["probability_1"]) for row in rows[:2]] == [p.top[0] for p in local]


def test_resume_refuses_another_program_s_file_before_changing_a_byte_and_drops_only_its_own_cut_line(tmp_path):
    """Resuming cuts the line a kill left half-written. It used to cut before reading the first line, so a file
    of another program named by --out lost its tail before the refusal (or gave a traceback)."""
    from mvkit.batch.outputs import LineOutput, columns
    from mvkit.errors import MvkitError

    photo = Path(__file__).parent.parent / "src/mvkit/data/builtin/photos/coffee.jpg"
    foreign = {"binary.csv": photo.read_bytes()[:300],  # a photo named .csv
               "notes.jsonl": b'{"path": "x", \nhalf a line',
               "theirs.csv": b"name,value\n1,2\nhalf"}
    for name, content in foreign.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(MvkitError, match="use a new --out or delete it"):
            LineOutput(tmp_path / name, topk=2).resume()
        assert (tmp_path / name).read_bytes() == content, name
    header = ",".join(columns(2)).encode()
    cut_header = tmp_path / "cut_header.csv"  # killed while writing its first line: a fresh start
    cut_header.write_bytes(header[:10])
    assert LineOutput(cut_header, topk=2).resume().done == 0 and cut_header.read_bytes() == b""
    ours = tmp_path / "ours.jsonl"
    rows = [{name: f"v{i}" for name in columns(2)} for i in range(3)]
    ours.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"path": "cut')
    resumed = LineOutput(ours, topk=2).resume()
    assert (resumed.done, resumed.last_row) == (3, rows[-1]) and ours.read_text().endswith("}\n")
