"""One helper for the benchmark scripts: replace a script's own section of BENCHMARKS.md between its markers."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_section(name: str, section: str) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else \
        "# Benchmarks\n\nEvery number here comes from the command written next to it.\n\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section}\n{end}"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)
