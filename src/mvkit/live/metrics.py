"""What a live run measures: frames by fate, rates, latencies, CPU, memory and energy."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class EnergyMeter:
    """Package energy from Intel/AMD RAPL through Linux powercap (`/sys/class/powercap/intel-rapl:N/energy_uj`;
    AMD CPUs use the same interface). The counters wrap at `max_energy_range_uj`; a read that went backwards
    has wrapped once (reads are seconds apart, a wrap takes minutes at full power)."""

    def __init__(self, root: Path | str = "/sys/class/powercap"):
        self.root = Path(root)
        # top-level package domains only: their sub-domains (core, uncore, dram) are counted inside them
        self.domains = [d for d in sorted(self.root.glob("intel-rapl:*")) if d.name.count(":") == 1
                        and (d / "energy_uj").exists()]
        self._last: dict[Path, int] = {}
        self.joules = 0.0
        self.reason = ""
        if not self.root.exists():
            self.reason = f"no RAPL powercap on this machine ({self.root} is missing)"
        elif not self.domains:
            self.reason = f"no RAPL package domain under {self.root}"
        else:
            try:
                self._last = {d: self._read(d / "energy_uj") for d in self.domains}
            except (OSError, ValueError) as exc:  # energy_uj is root-only on recent kernels
                self.reason = f"cannot read {self.domains[0] / 'energy_uj'} ({exc})"
                self.domains = []

    @property
    def available(self) -> bool:
        return bool(self.domains)

    @staticmethod
    def _read(path: Path) -> int:
        return int(path.read_text().strip())

    def sample(self) -> float:
        """Joules used since the meter was made."""
        for domain in self.domains:
            now = self._read(domain / "energy_uj")
            delta = now - self._last[domain]
            if delta < 0:
                delta += self._read(domain / "max_energy_range_uj") + 1
            self.joules += delta / 1e6
            self._last[domain] = now
        return self.joules


def percentiles(values: list[float], *qs: float) -> dict[str, float | None]:
    if not values:
        return {f"p{int(q)}": None for q in qs}
    array = np.asarray(values)
    return {f"p{int(q)}": round(float(np.percentile(array, q)), 3) for q in qs}


@dataclass
class LiveMetrics:
    started: float = field(default_factory=time.monotonic)
    processed: int = 0
    dropped: Counter = field(default_factory=Counter)  # throttled / stale
    end_to_end_ms: list[float] = field(default_factory=list)  # frame read -> result delivered
    inference_ms: list[float] = field(default_factory=list)  # the runtime's call alone
    prepare_ms: list[float] = field(default_factory=list)
    first_processed_at: float | None = None
    last_processed_at: float | None = None
    events: list[dict] = field(default_factory=list)
    _recent: deque = field(default_factory=lambda: deque(maxlen=30), repr=False)

    def event(self, policy: str, message: str) -> None:
        self.events.append({"at_s": round(time.monotonic() - self.started, 3), "policy": policy,
                            "message": message})

    def add(self, end_to_end_s: float, inference_s: float, prepare_s: float) -> None:
        now = time.monotonic()
        self.processed += 1
        self.first_processed_at = self.first_processed_at or now
        self.last_processed_at = now
        self._recent.append(now)
        self.end_to_end_ms.append(end_to_end_s * 1000)
        self.inference_ms.append(inference_s * 1000)
        self.prepare_ms.append(prepare_s * 1000)

    def achieved_fps(self) -> float | None:
        """Results per second between the first result and the last (a rate needs two)."""
        if self.processed < 2 or self.last_processed_at == self.first_processed_at:
            return None
        return (self.processed - 1) / (self.last_processed_at - self.first_processed_at)

    def recent_fps(self, window: int = 30) -> float | None:
        """Results per second over the last `window` results (the live status line)."""
        times = self._recent
        if len(times) < 2 or times[-1] == times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def latency_summary(self) -> dict:
        return {
            "end_to_end_ms": percentiles(self.end_to_end_ms, 50, 95),
            "inference_ms": percentiles(self.inference_ms, 50, 95),
            "prepare_ms": percentiles(self.prepare_ms, 50, 95),
        }


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def peak_rss_mb() -> float:
    from mvkit.bench import high_water_rss_mb

    return round(high_water_rss_mb(), 1)
