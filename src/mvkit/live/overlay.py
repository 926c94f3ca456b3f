"""The annotated picture (label, confidence, rate, latency drawn on the frame) and the video file it goes to."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mvkit.errors import MvkitError, require_extra


def _font(width: int, height: int):
    size = max(9, min(height // 18, width // 20))  # the caption (about 35 characters) fits the width
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _caption(draw: ImageDraw.ImageDraw, font, width: int, label: str, confidence: str, rate: str,
             latency: str) -> str:
    """The fullest caption that fits the frame's width: the whole caption, then the label's first name (ImageNet's
    "limpkin, Aramus pictus" -> "limpkin"), then label and confidence alone, then the label cut short."""
    short = label.split(",")[0]
    for caption in (f"{label} {confidence} | {rate} | {latency}", f"{short} {confidence} | {rate} | {latency}",
                    f"{short} {confidence}"):
        if draw.textlength(caption, font=font) <= width:
            return caption
    while len(short) > 1 and draw.textlength(f"{short}… {confidence}", font=font) > width:
        short = short[:-1]
    return f"{short}… {confidence}"


def annotate(image: Image.Image, label: str, confidence: float, fps: float | None, latency_ms: float) -> Image.Image:
    """A copy of the frame with a caption bar at the top."""
    picture = image.copy()
    draw = ImageDraw.Draw(picture, "RGBA")
    font = _font(picture.width, picture.height)
    rate = f"{fps:.1f} fps" if fps else "- fps"
    _, top, _, bottom = draw.textbbox((0, 0), "Ag", font=font)  # the line's height sets the bar's padding
    pad = max(2, (bottom - top) // 4)
    caption = _caption(draw, font, picture.width - 2 * pad, label, f"{confidence:.0%}", rate, f"{latency_ms:.0f} ms")
    _, top, _, bottom = draw.textbbox((0, 0), caption, font=font)
    draw.rectangle((0, 0, picture.width, bottom + 2 * pad), fill=(0, 0, 0, 170))
    draw.text((pad, pad - top // 2), caption, fill=(255, 255, 255, 255), font=font)
    return picture


VIDEO_OUT_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # containers that take H.264 or MPEG-4 part 2


def check_video_out(path: Path) -> None:
    if Path(path).suffix.lower() not in VIDEO_OUT_SUFFIXES:
        raise MvkitError(f"--out {path}: write a video file, {', '.join(VIDEO_OUT_SUFFIXES)}")


class VideoWriter:
    """H.264 (libx264) when FFmpeg has it, else MPEG-4 part 2, in the container the suffix names (.mp4, .mkv,
    .mov, .avi). Frames must all have the size of the first. `close` flushes the encoder and writes the index, so a run
    stopped by Ctrl-C or SIGTERM still leaves a playable file."""

    def __init__(self, path: Path, fps: float):
        require_extra("live", ["av"], "writing video")
        import av

        check_video_out(path)
        self.path = Path(path)
        self.fps = max(1, round(fps))
        # written beside the target and renamed by close(): a run that fails before its first frame leaves nothing
        self.partial = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.partial), mode="w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise MvkitError(f"--out {path}: cannot write a video there ({exc})") from exc
        self.codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = None
        self.frames = 0

    def write(self, image: Image.Image) -> None:
        import av

        if self._stream is None:
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
            self._stream.width, self._stream.height = image.width - image.width % 2, image.height - image.height % 2
            self._stream.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"preset": "veryfast"}
        if image.size != (self._stream.width, self._stream.height):
            image = image.resize((self._stream.width, self._stream.height))
        frame = av.VideoFrame.from_image(image)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush and keep the file if it has frames; else remove it."""
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
        finally:
            if self.frames:
                os.replace(self.partial, self.path)
            else:
                self.partial.unlink(missing_ok=True)
