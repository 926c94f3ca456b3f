"""The guide's deployment policies, each a small object the engine consults:

- `ThermalRate`: lower the target rate in steps while the CPU/SoC runs hot, recover with hysteresis;
- `choose_input_size`: the input size by device capability (the guide's rules), among the sizes an artifact has;
- `IdleRelease`: unload the model after a while without frames, reload it (with warm-up) on the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from mvkit.runtime.base import usable_cores


class TemperatureSensor(Protocol):
    name: str

    def read_celsius(self) -> float | None: ...


# thermal zone types that measure the CPU or SoC (not the battery, the wifi chip or the disk)
CPU_ZONE_TYPES = ("x86_pkg_temp", "cpu", "soc", "acpitz", "k10temp", "coretemp", "cpu-thermal", "cpu_thermal",
                  "tcpu", "package")


class ThermalZones:
    """Linux `/sys/class/thermal/thermal_zone*/temp` (millidegrees C): the hottest CPU/SoC zone."""

    def __init__(self, root: Path | str = "/sys/class/thermal"):
        self.root = Path(root)
        self.zones = [zone for zone in sorted(self.root.glob("thermal_zone*"))
                      if (zone / "temp").exists() and self._is_cpu(zone)]
        self.name = f"thermal zones {', '.join(z.name for z in self.zones)}"

    @staticmethod
    def _is_cpu(zone: Path) -> bool:
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            return False
        return any(kind.startswith(prefix) for prefix in CPU_ZONE_TYPES)

    def read_celsius(self) -> float | None:
        values = []
        for zone in self.zones:
            try:
                values.append(int((zone / "temp").read_text().strip()) / 1000.0)
            except (OSError, ValueError):
                continue
        return max(values) if values else None


class PsutilSensors:
    """psutil's hardware sensors (coretemp, k10temp, cpu_thermal ...): the hottest CPU reading."""

    name = "psutil sensors"

    def read_celsius(self) -> float | None:
        import psutil

        reader = getattr(psutil, "sensors_temperatures", None)
        readings = reader() if reader else {}
        values = [entry.current for chip, entries in readings.items()
                  if any(chip.lower().startswith(prefix) for prefix in CPU_ZONE_TYPES) for entry in entries]
        return max(values) if values else None


def find_sensor() -> TemperatureSensor | None:
    """The first sensor that gives a reading here, or None (containers and most VMs have none)."""
    for sensor in (ThermalZones(), PsutilSensors()):
        try:
            if sensor.read_celsius() is not None:
                return sensor
        except Exception:  # a sensor driver that fails to read is the same as no sensor
            continue
    return None


class ThermalRate:
    """Above `hot_c` the target rate drops by `step` of the requested rate at each check (down to `min_fraction`
    of it); it climbs back a step at a time only once the temperature is `hysteresis_c` below `hot_c`, so the
    rate does not flap around the threshold."""

    def __init__(self, sensor: TemperatureSensor | None, hot_c: float = 80.0, hysteresis_c: float = 5.0,
                 step: float = 0.25, min_fraction: float = 0.25, check_every_s: float = 2.0):
        self.sensor = sensor
        self.hot_c, self.hysteresis_c = hot_c, hysteresis_c
        self.step, self.min_fraction = step, min_fraction
        self.check_every_s = check_every_s
        self.level = 0  # steps taken down
        self.last_celsius: float | None = None
        self.throttle_events = 0
        self._checked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.sensor is not None

    def fraction(self) -> float:
        return max(self.min_fraction, 1.0 - self.level * self.step)

    def update(self, now: float) -> str | None:
        """Read the sensor if a check is due; returns a message when the rate changed."""
        if self.sensor is None or (self._checked_at is not None and now - self._checked_at < self.check_every_s):
            return None
        self._checked_at = now
        celsius = self.sensor.read_celsius()
        if celsius is None:
            return None
        self.last_celsius = celsius
        lowest = round((1.0 - self.min_fraction) / self.step)
        if celsius >= self.hot_c and self.level < lowest:
            self.level += 1
            self.throttle_events += 1
            return f"{celsius:.1f} C >= {self.hot_c:.0f} C: rate lowered to {self.fraction():.0%} of target"
        if celsius <= self.hot_c - self.hysteresis_c and self.level > 0:
            self.level -= 1
            return f"{celsius:.1f} C <= {self.hot_c - self.hysteresis_c:.0f} C: rate raised to {self.fraction():.0%} of target"
        return None


@dataclass(frozen=True)
class Device:
    cores: int
    memory_gb: float
    low_power: bool
    low_power_reason: str = ""

    @classmethod
    def detect(cls) -> "Device":
        import psutil

        cores = usable_cores()
        low_power, reason = _low_power()
        return cls(cores, psutil.virtual_memory().total / 2**30, low_power, reason)

    def describe(self) -> str:
        text = f"{self.cores} cores, {self.memory_gb:.1f} GB memory"
        return text + (f", low power ({self.low_power_reason})" if self.low_power else "")


def _low_power(platform_profile: Path = Path("/sys/firmware/acpi/platform_profile")) -> tuple[bool, str]:
    """The Linux counterparts of iOS's Low Power Mode: running on battery, or the low-power platform profile."""
    import psutil

    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is not None and not battery.power_plugged:
        return True, f"on battery, {battery.percent:.0f}%"
    try:
        if platform_profile.read_text().strip() in ("low-power", "quiet"):
            return True, "platform profile low-power"
    except OSError:
        pass
    return False, ""


@dataclass(frozen=True)
class SizeChoice:
    size: int
    reason: str

    def to_dict(self) -> dict:
        return {"size": self.size, "reason": self.reason}


def guide_size(device: Device) -> tuple[int, str]:
    """The guide's rule: low power -> 192; 2-3 cores or <= 3 GB -> 224; >= 4 cores and > 3 GB -> 256; else 224."""
    if device.low_power:
        return 192, "low power -> 192"
    if 2 <= device.cores <= 3 or device.memory_gb <= 3:
        return 224, "2-3 cores or <= 3 GB memory -> 224"
    if device.cores >= 4 and device.memory_gb > 3:
        return 256, ">= 4 cores and > 3 GB memory -> 256"
    return 224, "otherwise -> 224"


def choose_input_size(device: Device, supported: list[int] | None, forced: int | None = None,
                      trained: int | None = None) -> SizeChoice:
    """The guide's size for the device, but never above `trained`, the size the model was trained at: a larger
    input costs compute and accuracy (a checkpoint fine-tuned at 128 px loses about 10 points at 224). Then
    `supported` None means any size (a checkpoint); otherwise the wanted size if the artifact has it, else the
    largest it has below it, else its smallest."""
    from mvkit.errors import MvkitError

    if forced is not None:
        if supported is not None and forced not in supported:
            raise MvkitError(f"--size {forced}: the artifacts given take {', '.join(map(str, supported))}; pass one "
                             f"that takes {forced} too (a checkpoint takes any size, a Core ML package the sizes "
                             f"exported with --sizes)")
        return SizeChoice(forced, f"--size {forced}")
    wanted, rule = guide_size(device)
    reason = f"{device.describe()}: {rule}"
    if trained is not None and wanted > trained:
        wanted, reason = trained, f"{reason}; trained at {trained} px, not run above it"
    if supported is None or wanted in supported:
        return SizeChoice(wanted, reason)
    below = [s for s in supported if s <= wanted]
    size = max(below) if below else min(supported)
    return SizeChoice(size, f"{reason}; the artifact takes {', '.join(map(str, sorted(supported)))}: {size}")


class IdleRelease:
    """After `seconds` without a frame the model is released (the guide's "release the model in the background");
    the engine reloads it, with warm-up, when frames come again."""

    def __init__(self, seconds: float, clock: Callable[[], float]):
        self.seconds = seconds
        self.clock = clock
        self.last_frame = clock()
        self.releases = 0
        self.reloads = 0

    def saw_frame(self) -> None:
        self.last_frame = self.clock()

    def due(self) -> bool:
        return self.clock() - self.last_frame >= self.seconds
