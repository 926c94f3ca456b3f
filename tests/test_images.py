import io
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest
import skimage.data
from PIL import Image

from mvkit.data import images
from mvkit.data.images import BadImageError, SizeSummary, list_files, load_image, scan_images


def _diff(a: Image.Image, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - b.astype(np.float64)).mean())


@pytest.fixture()
def odd_folder(tmp_path):
    """The issue's folder: two bad files and four odd-but-valid photos made from a real photo."""
    photo = Image.fromarray(skimage.data.astronaut())  # 512x512 RGB
    photo = photo.resize((300, 200))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95)
    (tmp_path / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (tmp_path / "notes.jpg").write_text("this is a text file, not a photo\n")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    gray = np.asarray(photo.convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(255)
    alpha = np.asarray(rgba).copy()
    alpha[:, :150, 3] = 0  # left half fully transparent
    Image.fromarray(alpha, "RGBA").save(tmp_path / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photo.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    return tmp_path, np.asarray(photo), gray


def test_scan_reports_exactly_the_two_bad_files(odd_folder):
    folder, original, gray = odd_folder
    report = scan_images(list_files(folder))
    assert sorted(p.name for p, _ in report.bad) == ["notes.jpg", "truncated.jpg"]
    reasons = dict((p.name, r) for p, r in report.bad)
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert sorted(p.name for p in report.good) == ["cmyk.jpg", "gray16.png", "rgba.png", "rotated.jpg"]


def test_odd_photos_load_with_right_size_colour_and_orientation(odd_folder):
    folder, original, gray = odd_folder
    for name in ("cmyk.jpg", "gray16.png", "rgba.png", "rotated.jpg"):
        assert load_image(folder / name).mode == "RGB"

    cmyk = load_image(folder / "cmyk.jpg")
    assert cmyk.size == (300, 200)
    assert _diff(cmyk, original) < 4.0  # same colours, up to JPEG loss

    gray16 = load_image(folder / "gray16.png")
    assert gray16.size == (300, 200)
    assert _diff(gray16, np.stack([gray] * 3, axis=-1)) < 0.01  # 16 bits scaled down exactly

    rgba = np.asarray(load_image(folder / "rgba.png"))
    assert (rgba[:, :150] == 255).all()  # transparent part shows white
    assert np.array_equal(rgba[:, 150:], original[:, 150:])

    rotated = load_image(folder / "rotated.jpg")
    assert rotated.size == (200, 300)  # portrait after applying EXIF orientation
    assert _diff(rotated, np.rot90(original, k=-1)) < 4.0


@pytest.mark.parametrize("suffix, fmt", [(".heic", "HEIF"), (".avif", "AVIF")])
def test_phone_photo_formats_load_upright_and_broken_ones_are_named(tmp_path, suffix, fmt):
    """iPhones save HEIC by default, Android and the web AVIF: a rotated one loads as a viewer shows it."""
    if suffix not in images.IMAGE_EXTENSIONS:
        pytest.skip(f"this Pillow has no {fmt} codec")
    photo = Image.fromarray(skimage.data.astronaut()).resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo.save(tmp_path / f"rotated{suffix}", fmt, quality=90, exif=exif.tobytes())
    encoded = (tmp_path / f"rotated{suffix}").read_bytes()
    (tmp_path / f"truncated{suffix}").write_bytes(encoded[: len(encoded) // 2])

    upright = load_image(tmp_path / f"rotated{suffix}")
    assert upright.mode == "RGB" and upright.size == (200, 300)
    assert _diff(upright, np.asarray(photo.transpose(Image.Transpose.ROTATE_270))) < 4.0  # up to the codec's loss

    report = scan_images(list_files(tmp_path))
    assert [p.name for p in report.good] == [f"rotated{suffix}"]
    assert [p.name for p, _ in report.bad] == [f"truncated{suffix}"]


def test_palette_grayscale_and_one_bit_images_become_rgb(tmp_path):
    photo = Image.fromarray(skimage.data.coffee())
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    photo.convert("L").save(tmp_path / "gray.png")
    photo.convert("1").save(tmp_path / "bits.png")
    for name in ("palette.png", "gray.png", "bits.png"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == photo.size
    assert _diff(load_image(tmp_path / "palette.png"), np.asarray(photo)) < 6.0


def test_decompression_bomb_is_refused(tmp_path):
    # A 1-bit PNG of 96 megapixels is tiny on disk but would need gigabytes once decoded as RGB.
    Image.new("1", (12000, 8000)).save(tmp_path / "bomb.png")
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")
    report = scan_images([tmp_path / "bomb.png"])
    assert report.bad and "bomb" in report.bad[0][1]


def test_pixel_limit_applies_below_pillows_hard_limit(tmp_path, monkeypatch):
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "coffee.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(BadImageError, match="pixel limit"):
        load_image(tmp_path / "coffee.png")


def test_real_flower_photos_all_scan_clean(flowers):
    files = [p for p in list_files(flowers) if p.suffix == ".jpg"][:200]
    report = scan_images(files)
    assert len(report.good) == 200 and not report.bad
    assert load_image(files[0]).size == (128, 128)
    sizes = SizeSummary.of(report.sizes)
    assert (sizes.count, sizes.short_side_median, sizes.common) == (200, 128, [("128x128", 200)])


def test_scan_lists_the_size_distribution_of_mixed_photos(tmp_path):
    from PIL import Image

    for i, (w, h) in enumerate([(640, 480), (640, 480), (300, 200), (90, 120)]):
        Image.new("RGB", (w, h), (i * 40, 90, 30)).save(tmp_path / f"{i}.jpg")
    sizes = SizeSummary.of(scan_images(list_files(tmp_path)).sizes)
    assert (sizes.short_side_min, sizes.short_side_median, sizes.short_side_max) == (90, 480, 480)
    assert sizes.common[0] == ("640x480", 2)
    assert "short side 480 px median (min 90, max 480)" in sizes.describe()


def test_large_photos_are_decoded_once_and_read_small_after(tmp_path, monkeypatch):
    """Phone-sized photos: the scan keeps a copy at 512 px short side, and training and evaluation read it; a
    changed photo is never read from an old copy, a damaged copy falls back to the photo."""
    from mvkit.data import load_data

    cache = tmp_path / "cache"
    monkeypatch.setenv("MVKIT_PHOTO_CACHE", str(cache))
    astronaut = Image.fromarray(skimage.data.astronaut()).resize((1024, 768), Image.Resampling.BICUBIC)
    coffee = Image.fromarray(skimage.data.coffee()).resize((1200, 800), Image.Resampling.BICUBIC)
    for folder in ("a", "b"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    astronaut.save(tmp_path / "data" / "a" / "big.jpg", quality=95)
    astronaut.resize((300, 200)).save(tmp_path / "data" / "a" / "small.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: stored landscape, shown portrait
    coffee.save(tmp_path / "data" / "b" / "big.heic", "HEIF", quality=90, exif=exif.tobytes())
    coffee.resize((300, 200)).save(tmp_path / "data" / "b" / "small.png")

    splits = load_data(tmp_path / "data", val_fraction=0.5, fingerprints=True)
    assert len(list(cache.rglob("*.jpg"))) == 2  # only the two large photos
    photos = {path.relative_to(tmp_path / "data").as_posix(): path for path, _ in splits.train.samples + splits.val.samples}
    read = {name: images.load_photo(path) for name, path in photos.items()}
    assert read["a/big.jpg"].size == (683, 512) and read["b/big.heic"].size == (512, 768)  # upright
    assert read["a/small.jpg"].size == (300, 200) and read["b/small.png"].size == (300, 200)  # as they are
    for name in ("a/big.jpg", "b/big.heic"):
        full = load_image(photos[name]).resize(read[name].size, Image.Resampling.LANCZOS)
        assert _diff(read[name], np.asarray(full)) < 2.0
    decoded = []  # a second scan, as the next command on the same folder runs it: large photos are not decoded
    monkeypatch.setattr(images, "load_image", lambda path: decoded.append(Path(path).name) or load_image(path))
    again = load_data(tmp_path / "data", val_fraction=0.5, fingerprints=True)
    assert sorted(decoded) == ["small.jpg", "small.png"]
    assert again.photo_sizes == splits.photo_sizes  # the photos' own sizes, from the copies' headers
    assert again.fingerprints == splits.fingerprints and len(again.fingerprints) == 4  # the hashes too
    copy = images.cached_copy(photos["a/big.jpg"])  # a copy kept before mvkit wrote hashes: the copy is hashed
    Image.open(copy).save(copy, quality=95, comment="1024x768")
    decoded.clear()
    assert load_data(tmp_path / "data", val_fraction=0.5, fingerprints=True).fingerprints == splits.fingerprints
    assert "big.jpg" not in decoded and copy.name in decoded
    monkeypatch.undo()
    monkeypatch.setenv("MVKIT_PHOTO_CACHE", str(cache))
    dataset_sizes = {splits.train.image(i).size for i in range(len(splits.train))}
    dataset_sizes |= {splits.val.image(i).size for i in range(len(splits.val))}
    assert dataset_sizes == {(683, 512), (512, 768), (300, 200)}

    coffee.save(photos["a/big.jpg"], quality=90)  # the photo replaced: its old copy no longer applies
    assert images.load_photo(photos["a/big.jpg"]).size == (1200, 800)
    images.cached_copy(photos["b/big.heic"]).write_bytes(b"not a jpeg")
    assert images.load_photo(photos["b/big.heic"]).size == (800, 1200)

    monkeypatch.setenv("MVKIT_PHOTO_CACHE", "off")
    assert images.cached_copy(photos["a/big.jpg"]) is None


def test_a_photo_cache_that_cannot_be_written_costs_nothing_but_speed(tmp_path, monkeypatch):
    from mvkit.data import load_data

    (tmp_path / "not_a_folder").write_text("a file where the cache folder would go\n")
    monkeypatch.setenv("MVKIT_PHOTO_CACHE", str(tmp_path / "not_a_folder" / "cache"))
    big = Image.fromarray(skimage.data.astronaut()).resize((1024, 768), Image.Resampling.BICUBIC)
    for folder in ("a", "b"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        big.save(tmp_path / "data" / folder / "big.jpg", quality=95)
    splits = load_data(tmp_path / "data", val_fraction=0.5)
    assert not splits.skipped and len(splits.train) + len(splits.val) == 2
    assert splits.train.image(0).size == (1024, 768)  # read whole, as without a cache
    assert sorted(p.name for p in tmp_path.rglob("*.partial")) == []


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(0, 29), st.integers(0, 63), st.integers(0, 63)), max_size=20))
def test_near_duplicate_bands_find_every_pair_that_brute_force_finds(values, near_copies):
    """The bucketed search may compare fewer pairs, never miss one: hashes within 2 bits share a band exactly."""
    from mvkit.data.images import find_near_duplicates

    hashes = list(values)
    for source, bit, other_bit in near_copies:  # copies of some hashes with one or two bits flipped
        hashes.append(hashes[source % len(values)] ^ (1 << bit) ^ (1 << other_bit))
    fingerprints = {Path(f"{i:03d}.jpg"): value for i, value in enumerate(hashes)}
    parent = {path: path for path in fingerprints}

    def root(path):
        while parent[path] != path:
            path = parent[path]
        return path

    for first in fingerprints:  # every pair, the slow way
        for second in fingerprints:
            if first < second and (fingerprints[first] ^ fingerprints[second]).bit_count() <= 2:
                parent[root(first)] = root(second)
    groups = {}
    for path in fingerprints:
        groups.setdefault(root(path), []).append(path)
    assert find_near_duplicates(fingerprints) == sorted(sorted(g) for g in groups.values() if len(g) > 1)


@given(width=st.integers(8, 700), height=st.integers(8, 700), size=st.integers(16, 320),
       crop_pct=st.sampled_from([0.875, 0.9, 0.95, 1.0, 1.15]),
       interpolation=st.sampled_from(["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"]))
def test_the_eval_transform_gives_timms_numbers_exactly(width, height, size, crop_pct, interpolation):
    """mvkit's eval transform (written so a Predictor of an exported file needs no torch, torchvision or timm) gives
    the same float32 values as timm's create_transform, bit for bit, on a real photo of any shape."""
    from timm.data import create_transform

    from mvkit.preprocess import Preprocess

    photo = Image.fromarray(skimage.data.coffee()).resize((width, height), Image.Resampling.BILINEAR)
    preprocess = Preprocess(size, crop_pct, interpolation, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    timm_transform = create_transform(input_size=(3, size, size), is_training=False, interpolation=interpolation,
                                      mean=preprocess.mean, std=preprocess.std, crop_pct=crop_pct)
    ours = preprocess.eval_array(photo)
    assert ours.dtype == np.float32 and ours.shape == (3, size, size)
    assert np.array_equal(ours, timm_transform(photo).numpy())
    assert np.array_equal(preprocess.eval_transform()(photo).numpy(), ours)
