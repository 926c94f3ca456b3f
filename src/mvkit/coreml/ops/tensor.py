"""Shape and indexing ops: reshape, slicing, split/concat/pad, space/depth rearrangements, gather/scatter,
topk, cumsum and friends."""

from __future__ import annotations

import numpy as np

from mvkit.coreml.ops.common import CAST, PredictionError, UnsupportedOp, _f32


def op_reshape(x, shape):
    """Up to iOS16 a 0 in `shape` copies the input's dimension at the same position."""
    shape = [int(s) for s in np.asarray(shape).ravel()]
    shape = [np.shape(x)[i] if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape)


def op_reshape_ios17(x, shape):
    """From iOS17 the zeros align from the right; a 0 with no input dimension there becomes 1."""
    shape = [int(s) for s in np.asarray(shape).ravel()][::-1]
    dims = np.shape(x)[::-1]
    shape = [(dims[i] if i < len(dims) else 1) if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape[::-1])


def _slices(rank, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """slice_by_index's arguments -> (numpy slices, axes to squeeze)."""
    slices, squeeze = [], []
    for axis in range(rank):
        step = int(stride[axis]) if stride is not None else 1
        start = None if begin_mask is not None and begin_mask[axis] else int(begin[axis])
        stop = None if end_mask is not None and end_mask[axis] else int(end[axis])
        if squeeze_mask is not None and squeeze_mask[axis]:
            slices.append(slice(start, start + 1 if start != -1 else None, 1))
            squeeze.append(axis)
        else:
            slices.append(slice(start, stop, step))
    return tuple(slices), tuple(squeeze)


def op_slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    slices, squeeze = _slices(np.ndim(x), begin, end, stride, begin_mask, end_mask, squeeze_mask)
    out = np.asarray(x)[slices]
    return np.squeeze(out, axis=squeeze) if squeeze else out


def op_slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """iOS18: x with x[slice] = update (squeezed axes of the slice are absent from update)."""
    slices, squeeze = _slices(np.ndim(x), begin, end, stride, begin_mask, end_mask, squeeze_mask)
    out = np.array(x, copy=True)
    target_shape = out[slices].shape
    out[slices] = np.reshape(update, target_shape)
    return out


def op_split(x, num_splits=None, split_sizes=None, axis=0):
    axis = int(axis)
    if split_sizes is not None:
        bounds = np.cumsum([int(s) for s in np.asarray(split_sizes).ravel()])[:-1]
        return tuple(np.split(x, bounds, axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


def op_concat(values, axis, interleave=False):
    arrays = [np.asarray(v) for v in values]
    if any(a.ndim == 0 for a in arrays):  # shape arithmetic: scalars from gather/reduce joined into a vector
        arrays = [np.atleast_1d(a) for a in arrays]
    if interleave:  # slices taken from each input in turn along the axis
        stacked = np.stack(arrays, axis=int(axis) % arrays[0].ndim + 1)
        shape = list(arrays[0].shape)
        shape[int(axis)] *= len(arrays)
        return stacked.reshape(shape)
    return np.concatenate(arrays, axis=int(axis))


def op_pad(x, pad, mode="constant", constant_val=0.0):
    pad = [int(p) for p in np.asarray(pad).ravel()]
    pairs = [(0, 0)] * (x.ndim - len(pad) // 2) + [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    if mode == "constant":
        return np.pad(x, pairs, constant_values=float(constant_val))
    return np.pad(x, pairs, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def op_sliding_windows(x, axis, size, stride=1):
    """All windows of `size` along `axis`, every `stride`: a new axis of length `size` follows `axis`."""
    x = np.asarray(x)
    axis, size, stride = int(axis) % x.ndim, int(size), int(stride)
    windows = np.lib.stride_tricks.sliding_window_view(x, size, axis=axis)[(slice(None),) * axis + (slice(None, None, stride),)]
    return np.moveaxis(windows, -1, axis + 1)


def op_depth_to_space(x, block_size):
    """TensorFlow's order (DCR): channel (i * b + j) * C' + c goes to pixel (h * b + i, w * b + j)."""
    n, c, h, w = np.shape(x)
    b = int(block_size)
    return np.asarray(x).reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)


def op_space_to_depth(x, block_size):
    n, c, h, w = np.shape(x)
    b = int(block_size)
    return np.asarray(x).reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)


def op_pixel_shuffle(x, upscale_factor):
    """PyTorch's order (CRD): channel c * r * r + i * r + j goes to pixel (h * r + i, w * r + j)."""
    *lead, c, h, w = np.shape(x)
    r = int(upscale_factor)
    y = np.asarray(x).reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def op_space_to_depth_crd(x, r: int):
    """pixel_unshuffle, PyTorch's order: pixel (h * r + i, w * r + j) goes to channel c * r * r + i * r + j."""
    *lead, c, h, w = np.shape(x)
    k = len(lead)
    y = np.asarray(x).reshape(*lead, c, h // r, r, w // r, r)
    return y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3).reshape(*lead, c * r * r, h // r, w // r)


def op_space_to_batch(x, block_shape, paddings):
    """TensorFlow's space_to_batch on NCHW: block position (i, j) becomes batch (i * bw + j) * n + original."""
    bh, bw = (int(v) for v in np.asarray(block_shape).ravel())
    pads = np.asarray(paddings).reshape(2, 2).astype(int)
    x = np.pad(np.asarray(x), [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return y.reshape(bh * bw * n, c, h // bh, w // bw)


def op_batch_to_space(x, block_shape, crops):
    bh, bw = (int(v) for v in np.asarray(block_shape).ravel())
    crops = np.asarray(crops).reshape(2, 2).astype(int)
    x = np.asarray(x)
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    y = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return y[:, :, crops[0][0]:h * bh - crops[0][1], crops[1][0]:w * bw - crops[1][1]]


def op_reverse_sequence(x, lengths, seq_axis=0, batch_axis=0):
    """For each index along batch_axis, the first lengths[i] elements along seq_axis are reversed."""
    x = np.array(x)
    seq_axis, batch_axis = int(seq_axis) % x.ndim, int(batch_axis) % x.ndim
    for i, length in enumerate(np.asarray(lengths).ravel()):
        index = [slice(None)] * x.ndim
        index[batch_axis] = i
        row = x[tuple(index)]  # seq_axis shifts left by one if it came after batch_axis
        axis = seq_axis - (seq_axis > batch_axis)
        head = [slice(None)] * row.ndim
        head[axis] = slice(0, int(length))
        row[tuple(head)] = np.flip(row[tuple(head)], axis=axis)
    return x


def op_topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    x = _f32(x)
    axis, k = int(axis) % x.ndim, int(k)
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    indices = np.take(order, np.arange(k), axis=axis)
    values = np.take_along_axis(x, indices, axis=axis)
    return (values, indices.astype(CAST[str(output_indices_dtype)])) if bool(return_indices) else values


def op_cumsum(x, axis=0, exclusive=False, reverse=False):
    x = np.asarray(x)
    axis = int(axis) % x.ndim
    if reverse:
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if exclusive:
        out = out - x
    return np.flip(out, axis) if reverse else out


def op_one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    indices = np.asarray(indices).astype(int)
    hot = np.arange(int(one_hot_vector_size)) == indices[..., None]
    out = np.where(hot, on_value, off_value)
    return np.moveaxis(out, -1, int(axis) % out.ndim)


def op_band_part(x, lower=-1, upper=-1):
    """Keep the band of the last two axes: lower diagonals below, upper above (negative: all)."""
    x = np.asarray(x)
    rows, cols = np.indices(x.shape[-2:])
    keep = ((int(lower) < 0) | (rows - cols <= int(lower))) & ((int(upper) < 0) | (cols - rows <= int(upper)))
    return np.where(keep, x, 0).astype(x.dtype)


def _scatter_combine(current, updates, mode: str):
    combine = {"update": lambda a, b: b, "add": np.add, "sub": np.subtract, "mul": np.multiply,
               "div": np.divide, "max": np.maximum, "min": np.minimum}
    if mode not in combine:
        raise UnsupportedOp(f"scatter mode {mode!r}")
    return combine[mode](current, updates)


def _valid_indices(indices: np.ndarray, sizes, validate: bool, negative_wraps: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices with negatives wrapped, mask of in-bound entries). Before iOS17 scatter indices may be negative
    (counted from the end); from iOS17 a negative index is out of bounds. With `validate_indices` an out-of-bound
    index fails the prediction, as on the phone; without it Core ML's behaviour is undefined and the interpreter
    drops those updates."""
    sizes = np.asarray(sizes)
    wrapped = np.where(indices < 0, indices + sizes, indices) if negative_wraps else indices
    inside = (wrapped >= 0) & (wrapped < sizes)
    if validate and not inside.all():
        raise PredictionError(f"index {indices[~inside].ravel()[0]} is out of bounds for size(s) {sizes.tolist()} "
                              "(validate_indices is set)")
    return wrapped, inside


def op_scatter(data, indices, updates, axis=0, mode="add", validate_indices=False, negative_wraps=True):
    data = np.array(data)
    axis = int(axis) % data.ndim
    moved, updates = np.moveaxis(data, axis, 0), np.moveaxis(np.asarray(updates), axis, 0)
    indices, inside = _valid_indices(np.asarray(indices).ravel(), data.shape[axis], bool(validate_indices),
                                     negative_wraps)
    for position, index in enumerate(indices):
        if inside[position]:
            moved[index] = _scatter_combine(moved[index], updates[position], mode)
    return data


def op_scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False,
                          negative_wraps=True):
    data = np.array(data)
    axis = int(axis) % data.ndim
    indices, inside = _valid_indices(np.asarray(indices), data.shape[axis], bool(validate_indices), negative_wraps)
    target = list(np.indices(indices.shape))
    target[axis] = indices
    for where, update, keep in zip(zip(*(t.ravel() for t in target)), np.asarray(updates).ravel(), inside.ravel()):
        if keep:
            data[where] = _scatter_combine(data[where], update, mode)
    return data


def op_scatter_nd(data, indices, updates, mode="add", validate_indices=False, negative_wraps=True):
    data = np.array(data)
    indices = np.asarray(indices)
    depth = indices.shape[-1]
    indices, inside = _valid_indices(indices.reshape(-1, depth), data.shape[:depth], bool(validate_indices),
                                     negative_wraps)
    updates = np.asarray(updates).reshape((-1,) + data.shape[depth:])
    for where, update, keep in zip(indices, updates, inside.all(axis=1)):
        if keep:
            data[tuple(where)] = _scatter_combine(data[tuple(where)], update, mode)
    return data


def op_gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """np.take along `axis`; with batch_dims, the first batch_dims axes of x and indices are paired (iOS16)."""
    x, indices = np.asarray(x), np.asarray(indices).astype(np.int64)
    axis, batch_dims = int(axis) % x.ndim, int(batch_dims)
    if batch_dims < 0:
        batch_dims += indices.ndim
    if batch_dims:
        return np.stack([op_gather(x[b], indices[b], axis - 1, batch_dims - 1, validate_indices)
                         for b in range(x.shape[0])])
    indices, _ = _valid_indices(indices, x.shape[axis], bool(validate_indices), negative_wraps=True)
    return np.take(x, indices, axis=axis)


def op_gather_nd(x, indices, batch_dims=0, validate_indices=False):
    x, indices = np.asarray(x), np.asarray(indices)
    batch_dims = int(batch_dims)
    if batch_dims:
        return np.stack([op_gather_nd(x[b], indices[b], batch_dims - 1) for b in range(x.shape[0])])
    return x[tuple(np.moveaxis(indices, -1, 0))]


def op_reshape_like(x, ref_tensors, begins, ends, end_masks):
    """The output shape is pieces of the reference tensors' shapes (iOS16)."""
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731  one reference arrives unwrapped
    shape: list[int] = []
    for ref, begin, end, whole in zip(as_list(ref_tensors), as_list(begins), as_list(ends), as_list(end_masks)):
        dims = np.shape(ref)
        shape += dims[int(begin):] if bool(whole) else dims[int(begin):int(end)]
    return np.reshape(x, shape)


# ---- lists (TensorArray-like values of control-flow programs), held as Python lists of arrays ----

def op_make_list(elem_shape, init_length=1, dynamic_length=True, dtype="fp32"):
    dims = [d for d in np.atleast_1d(np.asarray(elem_shape, dtype=object)).ravel()]
    known = all(not isinstance(d, str) for d in dims)  # a string dimension is only known at run time
    return [np.zeros([int(d) for d in dims], CAST[str(dtype)]) if known else None for _ in range(int(init_length))]


def _grown(ls, length: int, element: np.ndarray) -> list:
    """The list padded to `length` with zeros shaped like `element` (writing past the end grows a list)."""
    return list(ls) + [np.zeros_like(element) for _ in range(length - len(ls))]


def op_list_write(ls, index, value):
    written = _grown(ls, int(index) + 1, np.asarray(value))
    written[int(index)] = np.asarray(value)
    return written


def op_list_scatter(ls, indices, value):
    indices = [int(i) for i in np.asarray(indices).ravel()]
    written = _grown(ls, max(indices, default=-1) + 1, np.asarray(value)[0])
    for row, index in enumerate(indices):
        written[index] = np.asarray(value)[row]
    return written
