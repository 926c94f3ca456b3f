"""The live engine: capture thread -> slot of one -> inference worker -> results, in order, to the caller.

- capture thread: reads the source (a file or folder is played on its own clock unless `realtime` is off), drops
  frames that come sooner than the rate limiter allows (counted "throttled"), and puts the rest in the slot; a
  frame the worker has not taken by the time the next one is due is replaced there (counted "stale").
- worker thread: prepares the frame into the reused buffer and runs the model, so inference never blocks capture;
  it also applies the idle-release policy.
- the caller's thread (iterating `LiveRun`): receives results in frame order, overlays them, writes the video,
  feeds the web page, keeps the metrics.
Before the first frame the model is warmed up on the chosen input size.
"""

from __future__ import annotations

import gc
import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from mvkit.live.metrics import EnergyMeter, LiveMetrics, cpu_seconds, peak_rss_mb
from mvkit.live.overlay import VideoWriter, annotate
from mvkit.live.policies import IdleRelease, SizeChoice, ThermalRate
from mvkit.live.prepare import FramePreparer
from mvkit.live.scheduler import LatestSlot, RateLimiter
from mvkit.live.serve import LiveServer
from mvkit.live.sources import Frame, Source
from mvkit.preprocess import Preprocess
from mvkit.runtime.base import Predictor


@dataclass
class LiveResult:
    index: int  # the frame's position in the source
    media_time: float  # seconds on the source's clock
    label: str
    confidence: float
    top: list[tuple[str, float]]  # (label, probability), most likely first
    latency_ms: float  # frame read -> result delivered
    inference_ms: float
    size: int  # input side the model ran at
    image: Image.Image  # the frame as read (RGB)

    def to_dict(self) -> dict:
        return {"index": self.index, "media_time": round(self.media_time, 4), "label": self.label,
                "confidence": round(self.confidence, 6), "latency_ms": round(self.latency_ms, 3),
                "inference_ms": round(self.inference_ms, 3), "size": self.size,
                "top": [{"label": label, "probability": round(p, 6)} for label, p in self.top]}


@dataclass
class LiveOptions:
    fps: float = 15.0
    max_frames: int | None = None  # stop after this many results
    duration_s: float | None = None
    warmup: int = 2  # warm-up calls before the first frame (0: none)
    reuse_buffers: bool = True
    realtime: bool = True  # play files and folders on their own clock (False: as fast as the model goes)
    topk: int = 5
    out: Path | None = None  # annotated video
    metrics_path: Path | None = None
    serve: str | None = None  # HOST:PORT of the web page
    idle_release_s: float | None = None


@dataclass
class _Done:
    frame: Frame
    probabilities: np.ndarray
    prepare_s: float
    inference_s: float


_END = object()


class LiveRun:
    """Iterate it to run: each item is a LiveResult. `summary()` has the metrics (also while running)."""

    def __init__(self, load: Callable[[], Predictor], source: Source, preprocess: Preprocess, size: SizeChoice,
                 options: LiveOptions, thermal: ThermalRate, description: dict):
        self.load, self.source, self.options, self.size = load, source, options, size
        self.preprocess = preprocess.with_changes(size=size.size)
        self.thermal = thermal
        self.description = description
        self.limiter = RateLimiter(options.fps)
        self.metrics = LiveMetrics()
        self.stopped_by: str | None = None
        self.predictor: Predictor | None = None
        self.labels: list[str] = []
        self.timings: dict[str, float | None] = {"load_ms": None, "warmup_ms": None, "first_inference_ms": None,
                                                 "first_result_ms": None}
        self.idle = IdleRelease(options.idle_release_s, time.monotonic) if options.idle_release_s else None
        # outputs are opened now, so a taken port or an unwritable --out fails before the model is loaded
        self.server = LiveServer(options.serve, description.get("artifact", "")) if options.serve else None
        self.writer = VideoWriter(options.out, options.fps) if options.out else None
        self._slot: LatestSlot[Frame] = LatestSlot()
        self._results: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._started_at: float | None = None
        self._cpu_start = 0.0
        self._energy: EnergyMeter | None = None
        self._iterated = False

    # -- the model -------------------------------------------------------------------------------------------

    def _load_model(self) -> None:
        started = time.perf_counter()
        self.predictor = self.load()
        self.labels = self.predictor.labels
        self.preparer = FramePreparer(self.preprocess, reuse=self.options.reuse_buffers)
        load_ms = (time.perf_counter() - started) * 1000
        warmup_ms = None
        if self.options.warmup:
            started = time.perf_counter()
            blank = np.zeros((1, 3, self.size.size, self.size.size), dtype=np.float32)
            for _ in range(self.options.warmup):
                output = self.predictor.run(blank)
            warmup_ms = (time.perf_counter() - started) * 1000
            self.predictor.check_classes(output)
        if self.timings["load_ms"] is None:
            self.timings.update(load_ms=round(load_ms, 1), warmup_ms=warmup_ms and round(warmup_ms, 1))

    # -- threads ---------------------------------------------------------------------------------------------

    def _capture(self) -> None:
        try:
            paced = self.options.realtime and not self.source.live
            clock_start = first_media = None
            for frame in self.source.frames(self._stop):
                if paced:
                    if first_media is None:
                        clock_start, first_media = time.monotonic(), frame.media_time
                    delay = clock_start + (frame.media_time - first_media) - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    frame.captured = time.monotonic()
                message = self.thermal.update(time.monotonic())
                if message:
                    self.metrics.event("thermal", message)
                self.limiter.target_fps = self.options.fps * self.thermal.fraction()
                if not self.limiter.accept(frame.media_time):
                    self.metrics.dropped["throttled"] += 1
                    continue
                if self.options.realtime:
                    if self._slot.put(frame) is not None:
                        self.metrics.dropped["stale"] += 1
                elif not self._slot.put_waiting(frame, self._stop):
                    return
        except BaseException as exc:  # handed to the caller's thread, which raises it
            self._failure = self._failure or exc
        finally:
            self._slot.close()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self._slot.take(timeout=0.1)
                if frame is None:
                    if self._slot.closed:
                        break
                    if self.idle and self.predictor is not None and self.idle.due():
                        self._release()
                    continue
                if self.idle:
                    self.idle.saw_frame()
                if self.predictor is None:
                    started = time.perf_counter()
                    self._load_model()
                    self.idle.reloads += 1
                    self.metrics.event("idle_release", f"frames again: model reloaded and warmed up in "
                                                       f"{(time.perf_counter() - started) * 1000:.0f} ms")
                started = time.perf_counter()
                batch = self.preparer(frame.image)
                prepared = time.perf_counter()
                probabilities = self.predictor.run(batch)[0]
                finished = time.perf_counter()
                self.limiter.observe(finished - started)
                self._hand_over(_Done(frame, probabilities, prepared - started, finished - prepared))
        except BaseException as exc:
            self._failure = self._failure or exc
        finally:
            self._hand_over(_END)

    def _hand_over(self, item) -> None:
        while True:
            try:
                self._results.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def _release(self) -> None:
        self.predictor = None
        self.preparer = None
        gc.collect()
        self.idle.releases += 1
        self.metrics.event("idle_release", f"no frame for {self.options.idle_release_s:g} s: model released")

    # -- the caller's side -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[LiveResult]:
        if self._iterated:
            raise RuntimeError("a LiveRun runs once; make another with mvkit.live.run")
        self._iterated = True
        try:
            self._start()
            yield from self._deliver()
        except KeyboardInterrupt:
            self.stopped_by = self.stopped_by or "interrupted"
            raise
        finally:
            self.stopped_by = self.stopped_by or "stopped by the caller"
            self._finish()

    def _start(self) -> None:
        self._load_model()
        self.metrics = LiveMetrics()  # CPU, energy and the clock count from here: frames, not model loading
        self._started_at = time.monotonic()
        self._cpu_start = cpu_seconds()
        self._energy = EnergyMeter()
        if not self.thermal.active:
            self.metrics.event("thermal", "no CPU temperature sensor here (Linux thermal zones, psutil): "
                                          "the temperature-aware rate is off")
        if self.idle:
            self.idle.saw_frame()
        for target, name in ((self._capture, "capture"), (self._work, "inference")):
            thread = threading.Thread(target=target, name=f"mvkit-live-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _deliver(self) -> Iterator[LiveResult]:
        options = self.options
        while True:
            if options.duration_s is not None and time.monotonic() - self._started_at >= options.duration_s:
                self.stopped_by = "duration"
                return
            try:
                item = self._results.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _END:
                if self._failure is not None:
                    raise self._failure
                self.stopped_by = "end of source" if not self.source.live else "source lost"
                return
            result = self._result(item)
            self._output(result)
            yield result
            if options.max_frames is not None and self.metrics.processed >= options.max_frames:
                self.stopped_by = "frames limit"
                return

    def _result(self, done: _Done) -> LiveResult:
        latency = time.monotonic() - done.frame.captured
        self.metrics.add(latency, done.inference_s, done.prepare_s)
        if self.metrics.processed == 1:
            self.timings.update(first_inference_ms=round(done.inference_s * 1000, 3),
                                first_result_ms=round(latency * 1000, 3))
        order = np.argsort(done.probabilities)[::-1][:self.options.topk]
        top = [(self.labels[i], float(done.probabilities[i])) for i in order]
        return LiveResult(done.frame.index, done.frame.media_time, top[0][0], top[0][1], top, latency * 1000,
                          done.inference_s * 1000, self.size.size, done.frame.image)

    def _output(self, result: LiveResult) -> None:
        if not (self.writer or self.server):
            return
        fps = self.metrics.recent_fps()
        picture = annotate(result.image, result.label, result.confidence, fps, result.latency_ms)
        if self.writer:
            self.writer.write(picture)
        if self.server:
            self.server.publish(picture, {"label": result.label, "confidence": result.confidence, "fps": fps,
                                          "latency_ms": result.latency_ms, "frame": result.index})

    def _finish(self) -> None:
        self._stop.set()
        self._slot.close()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.writer:
            self.writer.close()
        if self.server:
            self.server.close()
        self._final = self.summary()
        if self.options.metrics_path:
            from mvkit.files import write_atomically

            write_atomically(self.options.metrics_path, json.dumps(self._final, indent=2).encode())

    # -- what it measured ------------------------------------------------------------------------------------

    def summary(self) -> dict:
        if getattr(self, "_final", None) is not None:
            return self._final
        metrics, stats = self.metrics, self.source.stats
        elapsed = time.monotonic() - (self._started_at or time.monotonic())
        cpu = cpu_seconds() - self._cpu_start
        energy = {"available": False, "reason": "not measured"}
        if self._energy is not None:
            if self._energy.available:
                joules = self._energy.sample()
                energy = {"available": True, "joules": round(joules, 3),
                          "per_1000_inferences_j": round(joules * 1000 / metrics.processed, 3)
                          if metrics.processed else None}
            else:
                energy = {"available": False, "reason": self._energy.reason}
        return {
            **self.description,
            "runtime": self.predictor.name if self.predictor else self.description.get("runtime"),
            "source": self.source.describe(),
            "size": self.size.to_dict(),
            "fps": {"target": self.options.fps, "achieved": _round(metrics.achieved_fps()),
                    "scheduled": round(self.limiter.effective_fps, 3)},
            "frames": {"read": stats.read, "processed": metrics.processed,
                       "dropped": {"throttled": metrics.dropped["throttled"], "stale": metrics.dropped["stale"]},
                       "corrupt": stats.corrupt, "written": self.writer.frames if self.writer else None},
            "latency_ms": metrics.latency_summary(),
            "start": dict(self.timings),
            "cpu_percent": round(100 * cpu / elapsed, 1) if elapsed > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "energy": energy,
            "reconnects": stats.reconnects,
            "gaps": [gap.to_dict() for gap in stats.gaps],
            "source_problems": stats.problems[:20],
            "policies": {
                "buffer_reuse": self.options.reuse_buffers, "warmup_calls": self.options.warmup,
                "realtime": self.options.realtime,
                "thermal": {"active": self.thermal.active,
                            "sensor": self.thermal.sensor.name if self.thermal.sensor else None,
                            "hot_c": self.thermal.hot_c, "last_c": self.thermal.last_celsius,
                            "throttle_events": self.thermal.throttle_events},
                "idle_release": {"after_s": self.options.idle_release_s,
                                 "releases": self.idle.releases if self.idle else 0,
                                 "reloads": self.idle.reloads if self.idle else 0},
            },
            "events": list(metrics.events),
            "duration_s": round(elapsed, 3),
            "stopped_by": self.stopped_by,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
