"""Reading photos safely: every odd-but-valid file loads as the RGB image a person would see; broken ones
are found before training or evaluation starts, skipped and reported.

Pillow does the decoding, with pillow-heif registered for the HEIC/HEIF photos iPhones take by default (Pillow
itself reads AVIF). What is ours is the normalisation of modes (16-bit, palette, alpha, CMYK), the EXIF
orientation, refusing decompression bombs, the scan that collects the files that fail, and the photo cache: a
photo far larger than any mobile model's input is decoded once, by the scan, and read at a smaller size after.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, features

from mvkit.errors import MvkitError

log = logging.getLogger(__name__)

# libheif turns a HEIC's rotation into pixels and resets its EXIF orientation, so exif_transpose below does not
# turn it twice; AVIF keeps the EXIF tag and is turned there, as any viewer shows it.
pillow_heif.register_heif_opener()
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".heic",
                    ".heif"} | ({".avif"} if features.check("avif") else set())
# Pillow's own bomb threshold (about 89 megapixels): bigger files are refused, not decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class BadImageError(MvkitError):
    """A file that cannot be used as a photo; the message says why."""


# What operating systems and NAS boxes leave beside photos: macOS's zip resource forks, Synology's thumbnail
# folders (real JPEGs of the photos, which would leak into training as more photos), Windows' thumbnail caches.
SYSTEM_NAMES = {"__MACOSX", "@eaDir", "#recycle", "$RECYCLE.BIN", "System Volume Information", "Thumbs.db",
                "desktop.ini"}


def is_skipped_name(name: str) -> bool:
    """Hidden files and folders and the system ones above: never photos, never classes, never reported."""
    return name.startswith(".") or name in SYSTEM_NAMES


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not is_skipped_name(path.name)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, keeping what a viewer shows."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit grayscale: scale the full range down to 8 bits instead of clipping.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        if img.mode == "I" and values.max() > 65535:
            top = float(values.max())
        eight_bit = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as image viewers show them, not whatever colour hides underneath.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def load_image(path: Path | str | BinaryIO) -> Image.Image:
    """Open a photo (a file, or its bytes in a file object) as upright 8-bit RGB. Raises BadImageError for corrupt,
    truncated or oversized files."""
    path = path if hasattr(path, "read") else Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_PIXELS and twice that; we refuse the whole range.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImageError(
                        f"refused: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,} pixel limit "
                        "(possible decompression bomb); resize the photo if it is genuine"
                    )
                img.load()  # full decode: finds truncated files now, not in the middle of training
                upright = ImageOps.exif_transpose(img)
                return _to_rgb(upright)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"refused as a possible decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise BadImageError("not an image Pillow can read (wrong extension or corrupt header)") from exc
    except FileNotFoundError as exc:
        raise BadImageError("missing: the file is not there (deleted, moved, or a broken link)") from exc
    except PermissionError as exc:
        raise BadImageError("unreadable: permission denied") from exc
    except IsADirectoryError as exc:
        raise BadImageError("a folder, not a photo") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"corrupt or truncated: {exc}") from exc


@dataclass
class ScanReport:
    good: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each good photo, upright
    fingerprints: dict[Path, int] = field(default_factory=dict)  # with scan_images(fingerprints=True)

    def summary(self) -> str:
        lines = [f"{len(self.good)} images ok, {len(self.bad)} skipped"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.bad]
        return "\n".join(lines)


@dataclass
class SizeSummary:
    """The distribution of photo sizes: what a model's input size should be chosen against."""
    count: int
    short_side_min: int
    short_side_median: int
    short_side_max: int
    common: list[tuple[str, int]]  # the most frequent "WxH" sizes and their counts

    @classmethod
    def of(cls, sizes: list[tuple[int, int]]) -> "SizeSummary | None":
        if not sizes:
            return None
        short = sorted(min(size) for size in sizes)
        common = Counter(f"{w}x{h}" for w, h in sizes).most_common(3)
        return cls(len(sizes), short[0], short[len(short) // 2], short[-1], common)

    def describe(self) -> str:
        common = ", ".join(f"{size} ({count})" for size, count in self.common)
        return (f"short side {self.short_side_median} px median (min {self.short_side_min}, max "
                f"{self.short_side_max}); most common sizes {common}")


# Decoding and resizing a phone camera's photo (9-12 MP, JPEG or HEIC) takes longer than the training step that uses
# it, every epoch; so photos with a short side of CACHE_FROM px or more are kept, from the scan on, at a short side
# of CACHED_SHORT_SIDE: twice MobileViT's 256 px input, so that crops and resizes to any mobile model's size still
# take their pixels from a sharper image (BENCHMARKS.md, "the photo cache"). Nothing like it in Pillow or
# torchvision; Ultralytics keeps resized copies the same way (its `cache` option).
CACHED_SHORT_SIDE = 512
CACHE_FROM = 768


def photo_cache_dir() -> str | None:
    """$MVKIT_PHOTO_CACHE, else ~/.cache/mvkit/photos; None when MVKIT_PHOTO_CACHE is 0 or off."""
    setting = os.environ.get("MVKIT_PHOTO_CACHE", "")
    if setting.lower() in ("0", "off"):
        return None
    if setting:
        return setting
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "mvkit", "photos")


def cached_copy(path: Path) -> Path | None:
    """Where the small copy of a photo is kept: named by the file's path, size and modification time, so an
    edited or replaced photo is never read from an old copy. Datasets ask for every photo they read, most of
    them small, so this is kept to one stat and string work: the absolute path, not the resolved one (resolve
    took 25 us a photo, a tenth of decoding a 128 px JPEG), and one Path built at the end."""
    folder = photo_cache_dir()
    if folder is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = hashlib.sha256(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{CACHED_SHORT_SIDE}".encode())
    name = key.hexdigest()[:32]
    return Path(folder, name[:2], f"{name}.jpg")


def keep_small_copy(target: Path, image: Image.Image) -> Image.Image | None:
    """Write a large photo (upright RGB as decoded) small to `target`, its cached_copy, and return the small
    image; None for a photo too small to keep a copy of, or when a copy is there already (a damaged one, which
    load_photo passes over). A cache that cannot be written is skipped."""
    short = min(image.size)
    if short < CACHE_FROM or target.exists():
        return None
    scale = CACHED_SHORT_SIDE / short
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    partial = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # full-resolution colour: near lossless at a tenth of the bytes; the comment keeps the photo's own size
        # and the copy's difference hash, so a later scan needs neither photo decoded
        small.save(partial, "JPEG", quality=95, subsampling=0,
                   comment=f"{image.width}x{image.height} {difference_hash(small):016x}")
        os.replace(partial, target)  # whole or not at all, also with two scans at once
    except OSError as exc:
        with contextlib.suppress(OSError):  # a folder that cannot be made holds no partial file either
            partial.unlink()
        log.info("photo cache: could not write %s: %s", target, exc)
    return small


def load_photo(path: Path | str) -> Image.Image:
    """load_image, reading the small copy where the scan kept one (see CACHED_SHORT_SIDE)."""
    copy = cached_copy(Path(path))
    if copy is not None and copy.exists():
        try:
            return load_image(copy)
        except BadImageError as exc:  # a damaged copy: the photo itself, as if there were none
            log.info("photo cache: %s unreadable (%s), reading %s", copy, exc, path)
    return load_image(path)


def read_copy_record(copy: Path) -> tuple[tuple[int, int], int | None] | None:
    """The photo's own (upright) size and its copy's difference hash (None in copies from before mvkit kept it),
    from the header of its small copy (its cached_copy), if there is one: a copy is only written for a photo that
    decoded whole, and is named by the file's size and modification time, so the photo is known good without
    decoding it again."""
    if not copy.exists():
        return None
    try:
        with Image.open(copy) as small:
            size, *fingerprint = small.info.get("comment", b"").decode().split()
            width, height = (int(side) for side in size.split("x"))
            return (width, height), int(fingerprint[0], 16) if fingerprint else None
    except (OSError, ValueError, SyntaxError):
        return None  # a damaged copy: the photo is decoded as if there were none


VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}
MAX_DOWNLOAD_BYTES = 50 * 2**20  # a photo, not a video or a disk image


def is_url(item: object) -> bool:
    return isinstance(item, str) and item.lower().startswith(("http://", "https://"))


def download_photo(url: str, timeout_s: float = 30.0) -> Image.Image:
    """A photo at an http(s) URL, as load_image gives it (urllib: nothing to install). Raises BadImageError with
    what went wrong: the HTTP status, the network error, or the photo's own problem."""
    import io
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "mvkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise BadImageError(f"download failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BadImageError(f"download failed: {getattr(exc, 'reason', exc)}") from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise BadImageError(f"download refused: over {MAX_DOWNLOAD_BYTES // 2**20} MB, too large for a photo")
    return load_image(io.BytesIO(data))


def read_photo(path: Path | str) -> tuple[Image.Image | None, str | None]:
    """(the photo, None), or (None, why it cannot be used): what the scan decides about one file or URL."""
    if is_url(path):
        try:
            return download_photo(path), None
        except BadImageError as exc:
            return None, str(exc)
    if not is_image_file(path):
        video = " (a video: mvkit live --source plays it)" if path.suffix.lower() in VIDEO_EXTENSIONS else ""
        return None, f"not an image file extension ({path.suffix or 'none'}){video}"
    try:
        return load_image(path), None
    except BadImageError as exc:
        return None, str(exc)


def _check(path: Path, keep_copy: bool = False,
           fingerprint: bool = False) -> tuple[str | None, tuple[int, int] | None, int | None]:
    """(problem, size, difference hash): the hash is of what training reads, the small copy where one is kept."""
    copy = cached_copy(path) if keep_copy and is_image_file(path) else None
    known = read_copy_record(copy) if copy else None
    if known:
        size, value = known
        if fingerprint and value is None:
            with contextlib.suppress(BadImageError):  # an older copy without its hash
                value = difference_hash(load_image(copy))
        if not fingerprint or value is not None:
            return None, size, value if fingerprint else None
    image, problem = read_photo(path)
    if image is None:
        return problem, None, None
    small = keep_small_copy(copy, image) if copy else None
    return None, image.size, difference_hash(small or image) if fingerprint else None


def difference_hash(image: Image.Image) -> int:
    """The photo's 64-bit difference hash (imagehash.dhash: brightness gradients of a 9x8 grey thumbnail), which
    resizing, re-encoding and small colour changes move by a few bits at most."""
    import imagehash

    return int(str(imagehash.dhash(image)), 16)


def scan_images(
    paths: Iterable[Path],
    workers: int = 4,
    on_progress: Callable[[int], None] | None = None,
    keep_copies: bool = False,
    fingerprints: bool = False,
) -> ScanReport:
    """Decode every file once (threads: Pillow releases the GIL while decoding); sort good from bad. With
    `keep_copies`, large photos are also kept small for the reads that follow (load_photo), and a photo kept
    by an earlier scan is not decoded again."""
    paths = list(paths)
    report = ScanReport()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, (problem, size, fingerprint) in zip(
                paths, pool.map(lambda path: _check(path, keep_copies, fingerprints), paths)):
            if problem is None:
                report.good.append(path)
                report.sizes.append(size)
                if fingerprint is not None:
                    report.fingerprints[path] = fingerprint
            else:
                report.bad.append((path, problem))
                log.info("skipping %s: %s", path, problem)  # callers list them
            if on_progress:
                on_progress(1)
    return report


def find_near_duplicates(fingerprints: dict[Path, int], max_bits: int = 2) -> list[list[Path]]:
    """Groups of photos whose difference hashes differ in at most `max_bits` bits: one photo resized, re-saved or
    recoloured (on flowers128, 2 bits finds re-saved and greyscale copies). Two hashes that close agree exactly on
    one of max_bits + 1 bands of the 64 bits (pigeonhole), so pairs are only compared within a band's bucket, not
    all against all. imagehash computes the hashes; it has no search."""
    bands = max_bits + 1
    width = -(-64 // bands)
    buckets: dict[tuple[int, int], list[Path]] = {}
    for path, value in fingerprints.items():
        for band in range(bands):
            buckets.setdefault((band, (value >> (band * width)) & ((1 << width) - 1)), []).append(path)
    parent = {path: path for path in fingerprints}  # union-find: near copies of near copies are one group

    def root(path: Path) -> Path:
        while parent[path] != path:
            parent[path] = path = parent[parent[path]]
        return path

    for members in buckets.values():
        for i, first in enumerate(members):
            for second in members[i + 1:]:
                if (fingerprints[first] ^ fingerprints[second]).bit_count() <= max_bits:
                    parent[root(first)] = root(second)
    groups: dict[Path, list[Path]] = {}
    for path in fingerprints:
        groups.setdefault(root(path), []).append(path)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def find_copies(paths: Iterable[Path], fingerprints: dict[Path, int]) -> tuple[list[list[Path]], list[list[Path]]]:
    """(groups of byte-identical copies, groups of near-identical ones that are not all identical copies of one
    another) among `paths`; near-copies are looked for among the paths that have a fingerprint."""
    paths = list(paths)
    identical = find_duplicates(paths)
    wanted = set(paths)
    near = [group for group in find_near_duplicates({p: v for p, v in fingerprints.items() if p in wanted})
            if not any(set(group) <= set(same) for same in identical)]
    return identical, near


def find_duplicates(paths: Iterable[Path]) -> list[list[Path]]:
    """Groups of files with the same bytes (copies of one photo under other names), each sorted. Only files of
    equal size are read and hashed, so a library of distinct photos costs a stat each. A photo saved again or
    resized is a near-duplicate: find_near_duplicates looks for those."""
    by_size: dict[int, list[Path]] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            by_size.setdefault(os.stat(path).st_size, []).append(path)
    groups: dict[bytes, list[Path]] = {}
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        for path in same_size:
            with contextlib.suppress(OSError), open(path, "rb") as file:
                groups.setdefault(hashlib.file_digest(file, "blake2b").digest(), []).append(path)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def list_files(folder: Path, problems: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every file below folder except hidden and system ones (`is_skipped_name`), sorted, so listings are the same
    on every machine. Symlinked folders are followed once; what cannot be listed (an unreadable folder, a symlink
    loop, a broken link) is appended to `problems` as (path, reason) and logged, never dropped silently."""
    problems = problems if problems is not None else []
    first_new = len(problems)
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(error: OSError) -> None:
        problems.append((Path(error.filename), f"unreadable folder: {error.strerror or error}"))

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink back up the tree: listed once, not forever
            problems.append((Path(root), "symlink loop: this folder links back to one already listed"))
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not is_skipped_name(d))
        for name in files:
            path = Path(root) / name
            if is_skipped_name(name):
                continue
            if path.is_file():
                found.append(path)
            elif path.is_symlink():
                problems.append((path, "broken link: it points to a file that is not there"))
    for path, reason in problems[first_new:]:
        log.info("skipping %s: %s", path, reason)  # callers report them with the unreadable photos
    return sorted(found)
