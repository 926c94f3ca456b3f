"""Helpers for the benchmark scripts: replace a script's own section of BENCHMARKS.md between its markers, and name
the CPU a result was measured on (the machines change between sessions, and absolute times do not compare)."""

from __future__ import annotations

import re
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


def cpu_name() -> str:
    """The CPU's model name with its matrix extensions, e.g. "AMD EPYC (AVX-512 BF16)", from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    extensions = [label for flag, label in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"),
                                            ("avx512_vnni", "AVX-512 VNNI")) if flag in flags]
    return (name.group(1).strip() if name else "unknown CPU") + (f" ({', '.join(extensions)})" if extensions else "")
