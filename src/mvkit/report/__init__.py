"""`mvkit report`: one self-contained HTML page of what mvkit measured (no network at view time: images are
embedded). Every number on the page is read from a results file, and every table names its file; each table cell
carries the file and the key it came from (`data-source`, `data-key`), so the page can be checked against them.

Recognised results (found in the folders given, or given as files):
- a training run: metrics.json (a list of epochs), with curves.png and confusion.png beside it;
- an evaluation: metrics.json (an object with top1), with confusion.png;
- a benchmark: bench.json (mvkit bench, mvkit demo);
- a comparison: compare.json with pareto.svg (mvkit compare);
- verification: one report or a list of them (mvkit verify --json, the demo's verify.json);
- a live run: the --metrics file of mvkit live;
- tables with notes: {"tables": [{"title", "command", "rows", "notes", "images"}]} (benchmarks/guide_tables.py).
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvkit.errors import MvkitError

log = logging.getLogger(__name__)


@dataclass
class Cell:
    text: str
    key: str | None = None  # JSON path in the section's source file, e.g. "rows/0/val_top1"


@dataclass
class Section:
    title: str
    source: Path
    command: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, data URI)
    notes: list[str] = field(default_factory=list)
    named_after: Path | None = None  # the title ends with this path's last part, or more of it where two clash


# Fractions shown as percentages, as the terminal shows them (a bare 1 for 100% agreement read as a count)
FRACTION_KEYS = {"top1", "top5", "train_top1", "val_top1", "agreement", "artifact_top1", "reference_top1",
                 "threshold", "fastest_top1"}


def _format(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            key.split("/")[-1] in FRACTION_KEYS or key.startswith("per_class/")):
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _image(path: Path) -> tuple[str, str] | None:
    if not path.is_file():
        return None
    kind = {".png": "image/png", ".svg": "image/svg+xml"}.get(path.suffix)
    return (path.name, f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}") if kind else None


PATH_COLUMNS = ("artifact", "reference")  # shown by file name: full paths made tables wider than the page


def _table(section: Section, records: list[dict], prefix: str | None, columns: list[str] | None = None) -> None:
    """One row per record; cell keys are f"{prefix}{index}/{column}", or the bare column for prefix None (a single
    record at the top of its file)."""
    columns = columns or list(dict.fromkeys(key for record in records for key in record
                                            if not isinstance(record[key], (dict, list))))
    section.columns = columns
    for index, record in enumerate(records):
        section.rows.append([Cell(Path(record[c]).name if c in PATH_COLUMNS and c in record else _format(record.get(c), c),
                                  (c if prefix is None else f"{prefix}{index}/{c}") if c in record else None)
                             for c in columns])


def _key_values(section: Section, data: dict, keys: list[str]) -> None:
    """One row per key path ("frames/processed") of a nested object."""
    section.columns = ["measure", "value"]
    for key in keys:
        value: Any = data
        for part in key.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, (dict, list)):
            shown = Path(value).name if key in PATH_COLUMNS else _format(value, key)
            section.rows.append([Cell(key.replace("/", " ")), Cell(shown, key)])


LIVE_KEYS = ["artifact", "runtime", "size/size", "size/reason", "fps/target", "fps/achieved", "frames/read",
             "frames/processed", "frames/dropped/throttled", "frames/dropped/stale", "frames/corrupt",
             "latency_ms/end_to_end_ms/p50", "latency_ms/end_to_end_ms/p95", "latency_ms/inference_ms/p50",
             "latency_ms/inference_ms/p95", "start/first_result_ms", "cpu_percent", "peak_rss_mb",
             "energy/per_1000_inferences_j", "energy/reason", "reconnects", "stopped_by"]
VERIFY_COLUMNS = ["artifact", "format", "runtime", "reference", "count", "agreement", "max_abs_prob_diff",
                  "mean_abs_prob_diff", "artifact_top1", "reference_top1", "threshold", "passed"]
BENCH_COLUMNS = ["artifact", "format", "status", "file_mb", "threads", "latency_p50_ms", "latency_p90_ms",
                 "throughput_img_s", "peak_rss_mb", "top1", "agreement", "runtime"]


def read_section(path: Path, data: Any) -> Section | None:
    """The section for one results file (its parsed JSON), or None when it is not one mvkit wrote."""
    folder = path.parent
    if isinstance(data, list) and data and isinstance(data[0], dict) and "epoch" in data[0]:
        section = Section(f"Training: {folder.name}", path, named_after=folder, command="mvkit train")
        _table(section, data, "")
        section.images = [i for i in (_image(folder / "curves.png"), _image(folder / "confusion.png")) if i]
        return section
    if isinstance(data, list) and data and isinstance(data[0], dict) and "latency_p50_ms" in data[0]:
        section = Section(f"Benchmark: {folder.name}", path, named_after=folder, command="mvkit bench")
        _table(section, data, "", BENCH_COLUMNS)
        return section
    if isinstance(data, dict) and "rows" in data and "budget" in data:
        section = Section(f"Comparison: {folder.name}", path, named_after=folder, command="mvkit compare")
        _table(section, data["rows"], "rows/")
        section.images = [i for i in (_image(folder / "pareto.svg"),) if i]
        return section
    reports = data if isinstance(data, list) else [data]
    if reports and all(isinstance(r, dict) and "agreement" in r and "reference" in r for r in reports):
        section = Section(f"Verification: {folder.name}", path, named_after=folder, command="mvkit verify --json")
        _table(section, reports, "" if isinstance(data, list) else None, VERIFY_COLUMNS)
        section.notes = [f"{Path(r['artifact']).name}: {problem}" for r in reports for problem in r.get("problems") or []]
        return section
    if isinstance(data, dict) and "frames" in data and "latency_ms" in data:
        section = Section(f"Live run: {path.stem}", path, named_after=path.with_suffix(""),
                          command="mvkit live --metrics")
        _key_values(section, data, LIVE_KEYS)
        return section
    if isinstance(data, dict) and "top1" in data:
        section = Section(f"Evaluation: {folder.name}", path, named_after=folder, command="mvkit eval")
        _key_values(section, data, [k for k, v in data.items() if not isinstance(v, (dict, list))] +
                    [f"per_class/{name}" for name in data.get("per_class") or {}])
        section.images = [i for i in (_image(folder / "confusion.png"),) if i]
        return section
    return None


def read_tables(path: Path, data: dict) -> list[Section]:
    """A benchmark's tables, each with its command and its notes (the differences it calls out)."""
    sections = []
    for index, table in enumerate(data["tables"]):
        section = Section(table["title"], path, table["command"], notes=list(table.get("notes", [])))
        _table(section, table["rows"], f"tables/{index}/rows/")
        section.images = [i for i in (_image(path.parent / name) for name in table.get("images", [])) if i]
        sections.append(section)
    return sections


def read_sections(path: Path) -> list[Section]:
    """The sections of one JSON file; [] for JSON that holds no mvkit results (a split.json, a sidecar). A file
    that is no JSON, or whose results are damaged, raises MvkitError saying so."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise MvkitError(f"{path} is not readable JSON ({str(exc).splitlines()[0]})") from None
    try:
        if isinstance(data, dict) and isinstance(data.get("tables"), list):
            return read_tables(path, data)
        section = read_section(path, data)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise MvkitError(f"{path} is damaged: {type(exc).__name__} {exc}") from None
    return [section] if section else []


def _tell_apart(sections: list[Section]) -> None:
    """Sections that would share a title (the training runs of a comparison are all in folders named `train`) are
    titled by as much of their path as tells them apart: `Training: mobilevit_xxs/train`."""
    clashing: dict[str, list[Section]] = {}
    for section in sections:
        if section.named_after is not None:
            clashing.setdefault(section.title, []).append(section)
    for title, group in clashing.items():
        if len(group) < 2:
            continue
        kind = title.split(": ", 1)[0]
        paths = [section.named_after.resolve() for section in group]
        for depth in range(2, max(len(p.parts) for p in paths) + 1):
            names = ["/".join(p.parts[-depth:]) for p in paths]
            if len(set(names)) == len(names):
                break
        for section, name in zip(group, names):
            section.title = f"{kind}: {name.lstrip('/')}"


def collect(inputs: list[Path]) -> list[Section]:
    sections, seen = [], set()
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise MvkitError(f"{item} does not exist")
        files = sorted(item.rglob("*.json")) if item.is_dir() else [item]
        for file in files:
            if file.resolve() in seen:  # a run given alone and inside a folder given too: shown once
                continue
            seen.add(file.resolve())
            try:
                found = read_sections(file)
            except MvkitError as exc:  # the rest of the report is still worth having
                log.warning("%s; left out of the report", exc)
                continue
            if not found and not item.is_dir():
                log.warning("%s holds no mvkit results; left out of the report", file)
            sections += found
    _tell_apart(sections)
    if not sections:
        raise MvkitError(f"no mvkit results found in {', '.join(map(str, inputs))} (training runs, bench.json, "
                         "compare.json, verify --json reports, live --metrics files)")
    return sections


def write_report(inputs: list[Path], out: Path) -> Path:
    import jinja2

    sections = collect(inputs)
    template = jinja2.Environment(loader=jinja2.PackageLoader("mvkit.report", "templates"),
                                  autoescape=jinja2.select_autoescape(["html"])).get_template("report.html")
    from mvkit.files import write_atomically

    write_atomically(out, template.render(sections=sections).encode())
    return out
