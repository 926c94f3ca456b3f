"""Which frames get inferred: the guide's frame interval, made latency-aware, and a latest-frame-wins hand-off.

Written here because no library does this small piece: OpenCV and PyAV deliver frames, and a general queue would
grow when the model is slower than the camera, which is what a live classifier must never do.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Item = TypeVar("Item")


class RateLimiter:
    """Accepts a frame when it is due at the target rate, dropping those that arrive sooner.

    Due times advance on a grid of one interval (not from each accepted frame's own time), with half a source frame
    of slack, so a 30 fps camera's jitter still gives exactly every other frame at 15 fps instead of every third.
    The interval never goes below the model's recent processing time: scheduling faster than the model runs would
    only turn into stale frames."""

    def __init__(self, fps: float, smoothing: float = 0.2):
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        self.target_fps = fps
        self.smoothing = smoothing
        self.processing_s: float | None = None  # moving average of the model's time per frame
        self._due: float | None = None
        self._last_arrival: float | None = None
        self._arrival_gap: float | None = None  # moving average of the source's frame spacing

    @property
    def interval(self) -> float:
        return max(1.0 / self.target_fps, self.processing_s or 0.0)

    @property
    def effective_fps(self) -> float:
        return 1.0 / self.interval

    def accept(self, media_time: float) -> bool:
        if self._last_arrival is not None and media_time > self._last_arrival:
            gap = media_time - self._last_arrival
            self._arrival_gap = gap if self._arrival_gap is None else 0.8 * self._arrival_gap + 0.2 * gap
        self._last_arrival = media_time
        interval = self.interval
        slack = min(0.5 * (self._arrival_gap or 0.0), 0.5 * interval)
        if self._due is not None and media_time + slack < self._due:
            return False
        # on the grid, unless the source fell behind it (a pause, a gap): then restart from this frame
        on_grid = self._due is not None and media_time - self._due < interval
        self._due = (self._due if on_grid else media_time) + interval
        return True

    def observe(self, seconds: float) -> None:
        """Time the worker took for one frame (prepare + inference)."""
        self.processing_s = seconds if self.processing_s is None else \
            (1 - self.smoothing) * self.processing_s + self.smoothing * seconds


class LatestSlot(Generic[Item]):
    """A slot of one between the capture thread and the inference worker. `put` replaces what the worker has not
    taken yet and returns it (a stale frame, for counting); `put_waiting` waits for the slot to empty instead
    (playing a file as fast as the model goes, dropping nothing)."""

    def __init__(self):
        self._item: Item | None = None
        self._closed = False
        self._changed = threading.Condition()

    def put(self, item: Item) -> Item | None:
        with self._changed:
            replaced, self._item = self._item, item
            self._changed.notify_all()
            return replaced

    def put_waiting(self, item: Item, stop: threading.Event) -> bool:
        with self._changed:
            while self._item is not None and not self._closed and not stop.is_set():
                self._changed.wait(0.05)
            if self._closed or stop.is_set():
                return False
            self._item = item
            self._changed.notify_all()
            return True

    def take(self, timeout: float | None = None) -> Item | None:
        """The waiting item, or None after `timeout` seconds or once closed and empty."""
        with self._changed:
            if self._item is None and not self._closed:
                self._changed.wait(timeout)
            item, self._item = self._item, None
            self._changed.notify_all()
            return item

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._closed and self._item is None
