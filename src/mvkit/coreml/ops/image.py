"""Resampling: resize/upsample (every MIL sampling mode), crop, crop_resize, resample and affine."""

from __future__ import annotations

import numpy as np

from mvkit.coreml.ops.common import UnsupportedOp, _f32


def _sample_linear(x, grid, axis):
    """Linear interpolation of x along `axis` at fractional positions `grid` (clamped to the input)."""
    size = x.shape[axis]
    grid = np.clip(np.asarray(grid, np.float64), 0, size - 1)
    low = np.floor(grid).astype(int)
    high = np.minimum(low + 1, size - 1)
    weight = (grid - low).astype(np.float32).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim))
    return np.take(x, low, axis=axis) * (1 - weight) + np.take(x, high, axis=axis) * weight


def _positions(start: float, end: float, size_out: int, mode: str) -> np.ndarray:
    """Where the MIL sampling modes read between pixel coordinates start and end (resize: 0 and size-1;
    crop_resize: a box's edges). The spacing rules are those of Core ML's SamplingMode (NeuralNetwork.proto)."""
    i = np.arange(size_out, dtype=np.float64)
    extent = end - start
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            return np.array([start if mode == "STRICT_ALIGN_CORNERS" else (start + end) / 2])
        return start + i * extent / (size_out - 1)
    if mode in ("DEFAULT", "LEGACY"):  # LEGACY: TensorFlow's old align_corners=False, the same grid
        grid = start + i * (extent + 1) / size_out
        return np.minimum(grid, end) if extent >= 0 else np.maximum(grid, end)
    if mode == "OFFSET_CORNERS":
        return start + (i + 0.5) * extent / size_out
    if mode == "UNALIGN_CORNERS":  # half-pixel centres
        return start + (i + 0.5) * (extent + 1) / size_out - 0.5
    raise UnsupportedOp(f"sampling mode {mode!r}")


def _resize_bilinear(x, height: int, width: int, mode: str):
    x = _f32(x)
    x = _sample_linear(x, _positions(0, x.shape[-2] - 1, height, mode), -2)
    return _sample_linear(x, _positions(0, x.shape[-1] - 1, width, mode), -1)


def op_upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    height = int(np.floor(np.shape(x)[-2] * float(scale_factor_height)))
    width = int(np.floor(np.shape(x)[-1] * float(scale_factor_width)))
    half_pixel = not bool(align_corners) if half_pixel_centers is None else bool(half_pixel_centers)
    mode = "STRICT_ALIGN_CORNERS" if bool(align_corners) else ("UNALIGN_CORNERS" if half_pixel else "LEGACY")
    return _resize_bilinear(x, height, width, mode)


def _nearest(x, height: int, width: int):
    """Nearest neighbour: output i reads input floor(i * in / out)."""
    rows = np.minimum(np.floor(np.arange(height) * x.shape[-2] / height).astype(int), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(width) * x.shape[-1] / width).astype(int), x.shape[-1] - 1)
    return np.take(np.take(x, rows, axis=-2), cols, axis=-1)


def _box_edges(box, mode: str) -> tuple[float, float, float, float]:
    """(h_start, w_start, h_end, w_end) of one crop_resize box given in any box_coordinate_mode."""
    a, b, c, d = (float(v) for v in box)
    if mode == "CORNERS_HEIGHT_FIRST":
        return a, b, c, d
    if mode == "CORNERS_WIDTH_FIRST":
        return b, a, d, c
    if mode == "CENTER_SIZE_HEIGHT_FIRST":
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if mode == "CENTER_SIZE_WIDTH_FIRST":
        return b - d / 2, a - c / 2, b + d / 2, a + c / 2
    raise UnsupportedOp(f"box_coordinate_mode {mode!r}")


def _crop_resize_one(image, box, height, width, normalized, spatial_scale, box_mode, sampling_mode, pad_value):
    """One box of image [C, H, W] resized to [C, height, width]; samples outside the image read pad_value
    (tf.image.crop_and_resize's extrapolation_value)."""
    h_start, w_start, h_end, w_end = (v * float(spatial_scale) for v in _box_edges(box, box_mode))
    size_h, size_w = image.shape[-2:]
    if normalized:
        h_start, h_end = h_start * (size_h - 1), h_end * (size_h - 1)
        w_start, w_end = w_start * (size_w - 1), w_end * (size_w - 1)
    rows = _positions(h_start, h_end, height, sampling_mode)
    cols = _positions(w_start, w_end, width, sampling_mode)
    out = _sample_linear(_sample_linear(_f32(image), rows, -2), cols, -1)
    outside_rows = (rows < 0) | (rows > size_h - 1)
    outside_cols = (cols < 0) | (cols > size_w - 1)
    out[..., outside_rows, :] = pad_value
    out[..., :, outside_cols] = pad_value
    return out


def op_crop_resize(x, roi, target_height=1, target_width=1, normalized_coordinates=False, spatial_scale=1.0,
                   box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT", pad_value=0.0):
    """iOS15/16 form: roi [N, 1, 4 or 5, 1, 1] -> [N, B, C, h, w]; a 5-value box starts with its image index."""
    x = _f32(x)
    boxes = np.asarray(roi, np.float64).reshape(np.shape(roi)[0], -1)
    crops = []
    for box in boxes:
        images = [x[int(box[0])]] if box.size == 5 else list(x)
        crops.append(np.stack([_crop_resize_one(
            image, box[-4:], int(target_height), int(target_width), bool(normalized_coordinates), spatial_scale,
            str(box_coordinate_mode), str(sampling_mode), float(pad_value)) for image in images]))
    return np.stack(crops)


def op_crop_resize_ios17(x, boxes, box_indices=None, target_height=1, target_width=1, normalized_coordinates=False,
                         spatial_scale=1.0, box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT",
                         pad_value=0.0):
    """iOS17 form: boxes [N, 4] on images box_indices (default 0..N-1) -> [N, C, h, w]."""
    x = _f32(x)
    boxes = np.asarray(boxes, np.float64)
    indices = np.arange(len(boxes)) if box_indices is None else np.asarray(box_indices).ravel()
    return np.stack([_crop_resize_one(
        x[int(index)], box, int(target_height), int(target_width), bool(normalized_coordinates), spatial_scale,
        str(box_coordinate_mode), str(sampling_mode), float(pad_value)) for box, index in zip(boxes, indices)])


def _unnormalize(coordinate, size: int, mode: str, align_corners: bool):
    """resample's coordinates_mode -> pixel coordinates (0 = centre of the first pixel)."""
    if mode == "unnormalized":
        return coordinate
    if mode == "normalized_minus_one_to_one":
        coordinate = (coordinate + 1) / 2
    elif mode != "normalized_zero_to_one":
        raise UnsupportedOp(f"coordinates_mode {mode!r}")
    return coordinate * (size - 1) if align_corners else coordinate * size - 0.5


def _reflect(coordinate, low: float, high: float):
    """Fold coordinates into [low, high] by mirroring at both ends."""
    span = high - low
    if span <= 0:
        return np.full_like(coordinate, low)
    folded = np.mod(coordinate - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def op_resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """Sample x [B, C, H, W] at coordinates [B, H2, W2, (x, y)] (like torch's grid_sample, plus MIL's
    symmetric padding and unnormalized / zero-to-one coordinates)."""
    x = _f32(x)
    height, width = x.shape[-2:]
    coordinates = np.asarray(coordinates, np.float32)  # fp32 arithmetic like Core ML's: decides nearest's ties
    cols = _unnormalize(coordinates[..., 0], width, str(coordinates_mode), bool(align_corners))
    rows = _unnormalize(coordinates[..., 1], height, str(coordinates_mode), bool(align_corners))
    padding_mode = str(padding_mode)
    if padding_mode == "border":
        rows, cols = np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)
    elif padding_mode == "reflection":  # mirrored at the edge pixels' centres: |1 2 3| -> 2 3 2 1 2 3 2 1
        rows, cols = _reflect(rows, 0, height - 1), _reflect(cols, 0, width - 1)
    elif padding_mode == "symmetric":  # mirrored at the image's edges: |1 2 3| -> 3 2 1 1 2 3 3 2 1
        rows = np.clip(_reflect(rows, -0.5, height - 0.5), 0, height - 1)
        cols = np.clip(_reflect(cols, -0.5, width - 0.5), 0, width - 1)
    elif padding_mode != "constant":
        raise UnsupportedOp(f"padding_mode {padding_mode!r}")
    batch = np.arange(x.shape[0]).reshape(-1, 1, 1)

    def read(r, c):  # [B, H2, W2] integer positions -> [B, C, H2, W2], padding_value outside
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        values = x[batch, :, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]  # [B, H2, W2, C]
        values = np.where(inside[..., None], values, np.float32(padding_value))
        return np.moveaxis(values, -1, 1)

    if str(sampling_mode) == "nearest":  # ties to even, as Core ML (coremltools' test: 0.5 reads pixel 0)
        return read(np.rint(rows).astype(int), np.rint(cols).astype(int))
    if str(sampling_mode) != "bilinear":
        raise UnsupportedOp(f"sampling_mode {sampling_mode!r}")
    top, left = np.floor(rows).astype(int), np.floor(cols).astype(int)
    dy = (rows - top).astype(np.float32)[:, None]
    dx = (cols - left).astype(np.float32)[:, None]
    return ((read(top, left) * (1 - dx) + read(top, left + 1) * dx) * (1 - dy)
            + (read(top + 1, left) * (1 - dx) + read(top + 1, left + 1) * dx) * dy)


def op_affine(x, transform_matrix, output_height, output_width, sampling_mode, padding_mode, padding_value,
              coordinates_mode, align_corners):
    """Each output pixel (x, y) in the coordinates_mode grid reads x at (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
    height, width = int(output_height), int(output_width)
    if str(coordinates_mode) != "normalized_minus_one_to_one":
        raise UnsupportedOp(f"coordinates_mode {coordinates_mode!r}")
    if bool(align_corners):
        ys, xs = np.linspace(-1, 1, height), np.linspace(-1, 1, width)
    else:
        ys, xs = (2 * np.arange(height) + 1) / height - 1, (2 * np.arange(width) + 1) / width - 1
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    matrix = np.broadcast_to(np.asarray(transform_matrix, np.float64), (np.shape(x)[0], 6))
    a0, a1, a2, b0, b1, b2 = (matrix[:, k].reshape(-1, 1, 1) for k in range(6))
    coordinates = np.stack([a0 * grid_x + a1 * grid_y + a2, b0 * grid_x + b1 * grid_y + b2], axis=-1)
    return op_resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners)


def op_resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """iOS17 resize: the last resized_dims axes take their sizes from the end of `shape` (0 keeps x's size)."""
    x = np.asarray(x)
    count = int(resized_dims)
    targets = [int(v) for v in np.asarray(shape).ravel()][len(np.asarray(shape).ravel()) - count:]
    for axis, target in zip(range(x.ndim - count, x.ndim), targets):
        size = x.shape[axis]
        target = target or size
        positions = _positions(0, size - 1, target, str(sampling_mode))
        if str(interpolation_mode) == "LINEAR":
            x = _sample_linear(_f32(x), positions, axis)
        elif str(interpolation_mode) == "NEAREST_NEIGHBOR":
            # rounds the sampling grid (coremltools' test: 2 -> 3 rows reads 0, 1, 1), unlike the older
            # resize_nearest_neighbor, which floors
            x = np.take(x, np.clip(np.rint(positions), 0, size - 1).astype(int), axis=axis)
        else:
            raise UnsupportedOp(f"resize interpolation_mode {interpolation_mode!r}")
    return x


def op_crop(x, crop_height, crop_width):
    top, bottom = (int(v) for v in np.asarray(crop_height).ravel())
    left, right = (int(v) for v in np.asarray(crop_width).ravel())
    return np.asarray(x)[..., top:np.shape(x)[-2] - bottom, left:np.shape(x)[-1] - right]
