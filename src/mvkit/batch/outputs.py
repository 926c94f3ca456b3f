"""Prediction files that a job appends to, that stay valid when it stops, and that tell a re-run where to resume.

One row per photo, in input order: path, label_1, probability_1, ..., label_k, probability_k, error (empty when the
photo was read). CSV and JSON Lines are appended line by line (a line cut by a kill is dropped on resume);
Parquet is written as finished part files in `<out>.parts/`, gathered into `<out>` when the job ends or is
interrupted (pyarrow's ParquetWriter cannot reopen a closed file to append).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvkit.errors import MvkitError
from mvkit.files import atomic_output

SUFFIXES = (".parquet", ".csv", ".jsonl")


def columns(topk: int) -> list[str]:
    return ["path", *(name for i in range(1, topk + 1) for name in (f"label_{i}", f"probability_{i}")), "error"]


def check_output(out: Path) -> None:
    from mvkit.files import check_file_out

    if out.suffix.lower() not in SUFFIXES:
        raise MvkitError(f"--out {out}: write .parquet, .csv or .jsonl")
    check_file_out(out, "--out", f"predictions{out.suffix}")
    if out.suffix.lower() == ".parquet":
        from mvkit.errors import require_extra

        require_extra(None, ("pyarrow",), "Parquet output")


@dataclass
class Resume:
    done: int  # rows already written, in input order
    last_row: dict[str, Any] | None  # the last of them: its path says where the input resumes, its numbers
    # which model wrote it


class Output:
    """Appends rows; `resume` says what an earlier run of the same job finished."""

    def __init__(self, out: Path, topk: int):
        self.out, self.topk, self.names = Path(out), topk, columns(topk)

    def resume(self) -> Resume: ...
    def write(self, rows: list[dict[str, Any]]) -> None: ...
    def close(self, finished: bool = True) -> None: ...

    def check_columns(self, names: list[str]) -> None:
        if names != self.names:
            raise MvkitError(f"{self.out} holds columns for another job ({len(names)} columns, this one writes "
                             f"{len(self.names)}: a different --topk?); use a new --out or delete it")


class LineOutput(Output):
    """CSV or JSON Lines, appended and flushed after every batch."""

    def __init__(self, out: Path, topk: int):
        super().__init__(out, topk)
        self.json = self.out.suffix.lower() == ".jsonl"
        self.stream = None

    def resume(self) -> Resume:
        if not self.out.exists() or self.out.stat().st_size == 0:
            return Resume(0, None)
        self._check_first_line()  # before the cut line is dropped: another program's file stays as it was
        _drop_cut_line(self.out)
        count, last = 0, None
        try:
            with self.out.open(newline="", encoding="utf-8") as stream:  # streamed: it may hold millions of rows
                if self.json:
                    for count, line in enumerate(stream, 1):
                        last = json.loads(line)
                    return Resume(count, last)
                reader = csv.reader(stream)
                if next(reader, None) is None:
                    return Resume(0, None)
                for last in reader:
                    count += 1
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._not_ours(f"line {count + 1}: {exc}") from None
        return Resume(count, self.typed(last) if count else None)

    def _check_first_line(self) -> None:
        with self.out.open("rb") as stream:
            first = stream.readline(1 << 16)
        if not first.endswith(b"\n"):  # no whole line: ours cut by a kill in its first line, or not ours
            start = b'{"path": ' if self.json else ",".join(self.names).encode()
            if not (start.startswith(first) or first.startswith(start)):
                raise self._not_ours("its first line is not one mvkit writes")
            return
        try:
            text = first.decode("utf-8").lstrip("\ufeff")
            names = list(json.loads(text)) if self.json else next(csv.reader([text]))
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise self._not_ours(f"line 1: {exc}") from None
        self.check_columns(names)

    def _not_ours(self, reason: str) -> MvkitError:
        kind = "JSON Lines" if self.json else "CSV"
        return MvkitError(f"{self.out} is not a {kind} file of mvkit predictions ({reason}); use a new --out or "
                          "delete it")

    def typed(self, values: list[str]) -> dict[str, Any]:
        """A CSV row as the row dict that was written (numbers as floats, empty cells as None)."""
        row: dict[str, Any] = dict(zip(self.names, values))
        for key, value in row.items():
            row[key] = None if value == "" else float(value) if key.startswith("probability_") else value
        return row

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.stream is None:
            fresh = not self.out.exists() or self.out.stat().st_size == 0
            self.stream = self.out.open("a", newline="", encoding="utf-8")
            self.writer = None if self.json else csv.DictWriter(self.stream, fieldnames=self.names)
            if fresh and self.writer:
                self.writer.writeheader()
        for row in rows:
            if self.json:
                self.stream.write(json.dumps(row) + "\n")
            else:
                self.writer.writerow({k: "" if v is None else v for k, v in row.items()})
        self.stream.flush()

    def close(self, finished: bool = True) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def _drop_cut_line(path: Path, block: int = 1 << 16) -> None:
    """Truncate `path` after its last newline: a line cut by a kill is not a row. Reads from the end only."""
    with path.open("rb+") as stream:
        end = stream.seek(0, 2)
        position = end
        while position > 0:
            start = max(0, position - block)
            stream.seek(start)
            newline = stream.read(position - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                if keep != end:
                    stream.truncate(keep)
                return
            position = start
        stream.truncate(0)


class ParquetOutput(Output):
    """Finished part files of up to PART_ROWS rows in `<out>.parts/`, each written atomically; close() gathers
    them into `<out>`. Rows of an unfinished part are lost by a kill -9 and simply predicted again."""

    PART_ROWS = 2048  # a part when it holds this many rows or PART_SECONDS have passed since the last one
    PART_SECONDS = float(os.environ.get("MVKIT_PARQUET_PART_SECONDS", 10.0))  # set lower by the resume test

    def __init__(self, out: Path, topk: int):
        super().__init__(out, topk)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.pending: list[dict[str, Any]] = []
        self.last_part = time.monotonic()

    def _schema(self):
        import pyarrow as pa

        fields = [pa.field("path", pa.string())]
        for i in range(1, self.topk + 1):
            fields += [pa.field(f"label_{i}", pa.string()), pa.field(f"probability_{i}", pa.float64())]
        return pa.schema([*fields, pa.field("error", pa.string())])

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def _written(self) -> list[Path]:
        """The files that hold the rows so far: the parts of an unfinished job, else a finished file."""
        return self._part_files() or ([self.out] if self.out.exists() else [])

    def resume(self) -> Resume:
        """Reads footers and the last row group only, and changes no file (a refused job leaves them as they were)."""
        import pyarrow.parquet as pq

        files = [self._open(path) for path in self._written()]
        for file in files:
            self.check_columns(file.schema_arrow.names)
        done = sum(file.metadata.num_rows for file in files)
        if not done:
            return Resume(0, None)
        file = next(file for file in reversed(files) if file.metadata.num_rows)
        group = file.read_row_group(file.num_row_groups - 1)
        return Resume(done, group.slice(group.num_rows - 1).to_pylist()[0])

    @staticmethod
    def _open(path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:  # e.g. another program's file under a .parquet name
            raise MvkitError(f"{path} is not a Parquet file that can be read ({str(exc).splitlines()[0]}); use a "
                             "new --out or delete it") from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.pending += rows
        if len(self.pending) >= self.PART_ROWS or time.monotonic() - self.last_part >= self.PART_SECONDS:
            self._write_part()

    def _write_part(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self.pending, self.last_part = self.pending, [], time.monotonic()
        if not rows:
            return
        if not self._part_files() and self.out.exists():  # continuing a finished file: it becomes the first part
            with atomic_output(self.parts / "part-000000.parquet") as partial:
                shutil.copy2(self.out, partial)
        self.parts.mkdir(exist_ok=True)
        existing = self._part_files()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        table = pa.Table.from_pylist(rows, schema=self._schema())
        with atomic_output(self.parts / f"part-{number:06d}.parquet") as partial:
            pq.write_table(table, partial)

    def close(self, finished: bool = True) -> None:
        """Gather the parts into `<out>` (a valid file even after an interruption); the parts go once the job is
        finished, and stay for a re-run to resume from otherwise."""
        import pyarrow.parquet as pq

        self._write_part()
        parts = self._part_files()
        if not parts:
            return
        with atomic_output(self.out) as partial:
            with pq.ParquetWriter(partial, self._schema()) as writer:
                for part in parts:  # one part in memory at a time
                    writer.write_table(pq.read_table(part))
        if finished:
            shutil.rmtree(self.parts)


def open_output(out: Path, topk: int) -> Output:
    return (ParquetOutput if Path(out).suffix.lower() == ".parquet" else LineOutput)(out, topk)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """All rows of a predictions file (for tests and small files)."""
    out = Path(out)
    if out.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(out).to_pylist()
    if out.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        for key in row:
            if key.startswith("probability_"):
                row[key] = float(row[key]) if row[key] else None
            elif not row[key]:
                row[key] = None
    return rows
