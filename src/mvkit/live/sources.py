"""Where live frames come from: a camera, a video file, a network stream, or a folder of photos.

Files, streams and cameras are demuxed and decoded by PyAV (FFmpeg): packet by packet, so a packet that does not
decode is one corrupt frame, skipped and counted, and a demuxer error is a broken connection. Live sources
(camera, stream) that drop are reopened with backoff and the gap is recorded; a file or folder ends at its end.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from mvkit.errors import MvkitError, require_extra

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class Frame:
    """One frame. A decoded video frame is turned into RGB only when `image` is first read, so the frames the rate
    limiter drops never pay for the colour conversion."""

    __slots__ = ("index", "media_time", "captured", "_image", "_decoded")

    def __init__(self, index: int, image: Image.Image | None, media_time: float, captured: float, decoded=None):
        self.index = index  # position in the source, counting every frame read (corrupt ones included)
        self.media_time = media_time  # seconds on the source's clock: presentation time in a file, arrival when live
        self.captured = captured  # time.monotonic() when it was read
        self._image, self._decoded = image, decoded

    @property
    def image(self) -> Image.Image:
        """RGB."""
        if self._image is None:
            self._image, self._decoded = upright(self._decoded), None
        return self._image


# A phone filming upright stores sideways frames and a display matrix that turns them: PyAV reads its rotation as
# degrees counter-clockwise. Pillow's transposes apply it as FFmpeg's own player and CLI do (their autorotate).
_TURNS = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270, 270: Image.Transpose.ROTATE_270,
          180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}


def upright(decoded) -> Image.Image:
    """A decoded video frame as RGB, turned the way its container says it is shown."""
    image = decoded.to_image()
    turn = _TURNS.get(round(decoded.rotation))
    return image if turn is None else image.transpose(turn)


@dataclass
class Gap:
    """A live source that stopped delivering and came back (or did not: `recovered` False)."""
    at_s: float  # seconds since the source was first opened
    seconds: float
    reason: str
    recovered: bool = True

    def to_dict(self) -> dict:
        return {"at_s": round(self.at_s, 3), "seconds": round(self.seconds, 3), "reason": self.reason,
                "recovered": self.recovered}


@dataclass
class SourceStats:
    read: int = 0  # frames decoded
    corrupt: int = 0  # frames that could not be decoded, skipped
    reconnects: int = 0
    gaps: list[Gap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # corrupt photos of a folder, by name


class Source:
    """Base class. `frames(stop)` yields Frames until the source ends or `stop` is set."""

    kind = "source"
    live = False  # frames arrive on their own clock (camera, stream); a file or folder is played
    nominal_fps: float | None = None

    def __init__(self, spec: str):
        self.spec = spec
        self.stats = SourceStats()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.spec, "nominal_fps": self.nominal_fps}


class FolderSource(Source):
    """Photos of a folder, in sorted order, played as frames at `fps` (each photo one frame)."""

    kind = "folder"

    def __init__(self, folder: Path, fps: float):
        super().__init__(str(folder))
        from mvkit.data.images import is_image_file, list_files

        problems: list[tuple[Path, str]] = []
        self.paths = [p for p in list_files(folder, problems) if is_image_file(p)]
        self.stats.problems += [f"{path}: {reason}" for path, reason in problems]
        if not self.paths:
            raise MvkitError(f"--source {folder}: no photos in this folder")
        self.nominal_fps = fps

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        from mvkit.data.images import BadImageError, load_image

        for index, path in enumerate(self.paths):
            if stop.is_set():
                return
            try:
                image = load_image(path)
            except BadImageError as exc:
                self.stats.corrupt += 1
                self.stats.problems.append(f"{path}: {exc}")
                continue
            self.stats.read += 1
            yield Frame(index, image, index / self.nominal_fps, time.monotonic())


class VideoSource(Source):
    """A video file, a stream URL or a camera, through PyAV. `open_timeout_s`/`read_timeout_s` bound how long a
    dead stream can block; a live source is reopened with doubling backoff until `reconnect_for_s` has passed
    without a frame."""

    def __init__(self, spec: str, kind: str, open_timeout_s: float = 5.0, read_timeout_s: float = 3.0,
                 reconnect_for_s: float = 30.0):
        super().__init__(spec)
        require_extra("live", ["av"], "reading video")
        self.kind = kind
        self.live = kind in ("camera", "stream")
        self.timeouts = (open_timeout_s, read_timeout_s)
        self.reconnect_for_s = reconnect_for_s
        self._container = self._open()  # opened now, so a wrong path or URL fails before any other work
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.nominal_fps = float(rate) if rate and self.kind == "file" else None

    def _open(self):
        import av

        url, fmt = _camera_url(int(self.spec)) if self.kind == "camera" else (self.spec, None)
        try:
            container = av.open(url, format=fmt, timeout=self.timeouts)
        except (av.error.FFmpegError, OSError) as exc:
            raise MvkitError(f"--source {self.spec}: cannot open it ({exc})") from exc
        if not container.streams.video:
            container.close()
            raise MvkitError(f"--source {self.spec}: it has no video stream")
        stream = container.streams.video[0]
        # FFmpeg's default threading is kept: frame threads would hold frames back (latency) and compete with the
        # model's threads for the cores. A damaged frame is an error to count and skip, not a patched-up picture.
        stream.codec_context.options = {"err_detect": "explode"}
        return container

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import av

        opened_at = time.monotonic()
        index = 0
        container = self._container
        while not stop.is_set():
            try:
                for decoded in self._decode(container, stop):
                    if stop.is_set():
                        break
                    now = time.monotonic()
                    pts = float(decoded.time) if decoded.time is not None else None
                    media_time = (now - opened_at) if self.live or pts is None else pts
                    self.stats.read += 1
                    yield Frame(index, None, media_time, now, decoded=decoded)
                    index += 1
                reason = "the source ended"
            except av.error.FFmpegError as exc:
                reason = f"read failed: {exc}"
            finally:
                container.close()
            if stop.is_set() or not self.live:
                return
            container = self._reconnect(stop, opened_at, reason)  # a live source that ends has dropped
            if container is None:
                return

    def _decode(self, container, stop: threading.Event):
        """PyAV video frames; a packet that does not decode is one corrupt frame."""
        import av

        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if stop.is_set():
                return
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                self.stats.corrupt += 1
                continue
            for frame in decoded:
                if frame.is_corrupt:
                    self.stats.corrupt += 1
                    continue
                yield frame

    def _reconnect(self, stop: threading.Event, opened_at: float, reason: str):
        started = time.monotonic()
        delay = 0.25
        while not stop.is_set():
            try:
                container = self._open()
            except MvkitError:
                if time.monotonic() - started > self.reconnect_for_s:
                    self.stats.gaps.append(Gap(started - opened_at, time.monotonic() - started, reason, False))
                    return None
                stop.wait(delay)
                delay = min(delay * 2, 4.0)
                continue
            self.stats.reconnects += 1
            self.stats.gaps.append(Gap(started - opened_at, time.monotonic() - started, reason))
            return container
        return None


def _camera_url(index: int) -> tuple[str, str | None]:
    """FFmpeg's capture device for camera N on this system."""
    system = platform.system()
    if system == "Linux":
        return f"/dev/video{index}", "v4l2"
    if system == "Darwin":
        return f"{index}:none", "avfoundation"
    return f"video={index}", "dshow"


def open_source(spec: str | int | Path, fps: float, reconnect_for_s: float = 30.0) -> Source:
    """SRC as `mvkit live --source` takes it: a camera index, a video file, a stream URL or a folder of photos."""
    text = str(spec)
    if text.isdigit():
        return VideoSource(text, "camera", reconnect_for_s=reconnect_for_s)
    if text.lower().startswith(STREAM_SCHEMES):
        return VideoSource(text, "stream", reconnect_for_s=reconnect_for_s)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, fps)
    if path.is_file():
        return VideoSource(text, "file")
    raise MvkitError(f"--source {text}: no such file or folder (a camera is a number such as 0, a stream a URL "
                     f"such as rtsp://host/path or http://host/feed.mjpg)")
