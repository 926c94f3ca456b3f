"""The MIL ops of Core ML ML programs, on numpy: one function per op, taking the op's named inputs (decoded)
and returning one value or a tuple. Semantics follow the op definitions in coremltools (mil/ops/defs) and
are checked against coremltools' own op tests (benchmarks/coreml_conformance.py). Written here: no library
runs MIL outside macOS.

- Loops run over kernel positions or blocks, never over pixels.
- Ops compute in float32; the interpreter stores each result in the dtype the program declares.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from mvkit.errors import MvkitError

# MIL DataType enum value -> numpy dtype (sub-byte types are unpacked to uint8/int8)
DTYPES = {1: np.bool_, 10: np.float16, 11: np.float32, 12: np.float64, 21: np.int8, 22: np.int16, 23: np.int32,
           24: np.int64, 31: np.uint8, 32: np.uint16, 33: np.uint32, 34: np.uint64}
SUB_BYTE = {25: (4, True), 35: (4, False), 36: (2, False), 37: (1, False), 38: (6, False), 39: (3, False)}
CAST = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
         "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


def unpack_bits(raw: bytes, bits: int, signed: bool, count: int) -> np.ndarray:
    """Sub-byte values packed least-significant bit first."""
    flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[: count * bits]
    values = (flat.reshape(count, bits).astype(np.int32) << np.arange(bits)).sum(axis=1)
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values.astype(np.int8 if signed else np.uint8)


class UnsupportedOp(MvkitError):
    pass


def _f32(x):
    return np.asarray(x, dtype=np.float32) if np.asarray(x).dtype == np.float16 else np.asarray(x)


def _same_pads(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (total - small, small) if lower else (small, total - small)


def _spatial_pads(x, kernel, strides, dilations, pad_type, pad) -> list[tuple[int, int]]:
    if pad_type == "valid":
        return [(0, 0)] * len(kernel)
    if pad_type == "custom":
        pad = [int(p) for p in np.asarray(pad).ravel()]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(kernel))]
    if pad_type in ("same", "same_lower"):
        return [_same_pads(x.shape[2 + i], kernel[i], strides[i], dilations[i], pad_type == "same_lower")
                for i in range(len(kernel))]
    raise UnsupportedOp(f"pad_type {pad_type!r}")


def _windows(x, kernel, strides, dilations):
    """(kernel offset, strided view) for each kernel position over the spatial axes 2..: loops run over kernel
    positions, never over pixels. Works for 1, 2 and 3 spatial dimensions."""
    spatial = x.shape[2:]
    outs = [(spatial[d] - (kernel[d] - 1) * dilations[d] - 1) // strides[d] + 1 for d in range(len(kernel))]
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(o * dil, o * dil + st * (out - 1) + 1, st)
                      for o, dil, st, out in zip(offset, dilations, strides, outs))
        yield offset, x[(slice(None), slice(None)) + index]


def op_conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    x, weight = _f32(x), _f32(weight)
    kernel = weight.shape[2:]
    rank = len(kernel)
    strides = [int(s) for s in (strides if strides is not None else [1] * rank)]
    dilations = [int(d) for d in (dilations if dilations is not None else [1] * rank)]
    pads = _spatial_pads(x, kernel, strides, dilations, pad_type, pad)
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    groups = int(groups)
    n = x.shape[0]
    out_c, in_per_group = weight.shape[:2]
    out_per_group = out_c // groups
    result = None
    for offset, window in _windows(x, kernel, strides, dilations):
        spatial = window.shape[2:]
        tap = weight[(slice(None), slice(None)) + offset]  # (out_c, in_per_group)
        if in_per_group == 1 and out_per_group == 1:  # depthwise
            term = window * tap[:, 0].reshape((1, out_c) + (1,) * rank)
        else:
            grouped = window.reshape(n, groups, in_per_group, -1)
            term = np.matmul(tap.reshape(groups, out_per_group, in_per_group)[None], grouped).reshape(
                (n, out_c) + spatial)
        result = term if result is None else result + term
    if bias is not None:
        result = result + _f32(bias).reshape((1, -1) + (1,) * rank)
    return result


def op_conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                      dilations=None, groups=1):
    """Each input pixel scatters weight * value into the output: one strided add per kernel position over the
    full (uncropped) output, then the padding is cropped."""
    x, weight = _f32(x), _f32(weight)
    kernel = weight.shape[2:]
    rank = len(kernel)
    strides = [int(s) for s in (strides if strides is not None else [1] * rank)]
    dilations = [int(d) for d in (dilations if dilations is not None else [1] * rank)]
    groups = int(groups)
    n, in_c = x.shape[:2]
    in_per_group, out_per_group = in_c // groups, weight.shape[1]
    spatial = x.shape[2:]
    full = [(spatial[d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 for d in range(rank)]
    result = np.zeros((n, out_per_group * groups, *full), np.float32)
    grouped = x.reshape(n, groups, in_per_group, -1)
    for offset in itertools.product(*(range(k) for k in kernel)):
        tap = weight[(slice(None), slice(None)) + offset].reshape(groups, in_per_group, out_per_group)
        term = np.matmul(tap.transpose(0, 2, 1)[None], grouped).reshape((n, out_per_group * groups) + spatial)
        index = tuple(slice(o * dil, o * dil + st * (size - 1) + 1, st)
                      for o, dil, st, size in zip(offset, dilations, strides, spatial))
        result[(slice(None), slice(None)) + index] += term
    if output_shape is not None:
        wanted = [int(v) for v in np.asarray(output_shape).ravel()[2:]]
    elif pad_type == "same":
        wanted = [spatial[d] * strides[d] for d in range(rank)]
    else:
        wanted = None
    if pad_type == "custom" and pad is not None:
        pads = [int(p) for p in np.asarray(pad).ravel()]
        crops = [(pads[2 * d], pads[2 * d + 1]) for d in range(rank)]
    elif wanted is not None:  # "same" (and a given output shape): the extra is cropped half before, half after
        crops = [((full[d] - wanted[d]) // 2, full[d] - wanted[d] - (full[d] - wanted[d]) // 2) for d in range(rank)]
    else:
        crops = [(0, 0)] * rank
    result = result[(slice(None), slice(None)) + tuple(slice(lo, full[d] - hi) for d, (lo, hi) in enumerate(crops))]
    if bias is not None:
        result = result + _f32(bias).reshape((1, -1) + (1,) * rank)
    return result


def _pool(x, kernel_sizes, strides, pad_type, pad, reduce, fill, ceil_mode=False, exclude_padding=True):
    x = _f32(x)
    kernel = [int(k) for k in kernel_sizes]
    strides = [int(s) for s in strides]
    ones_dilation = [1] * len(kernel)
    pads = _spatial_pads(x, kernel, strides, ones_dilation, pad_type, pad)
    if ceil_mode:  # extra padding at the end so that partial windows count
        pads = [(lo, hi + (-(x.shape[2 + d] + lo + hi - kernel[d]) % strides[d]))
                for d, (lo, hi) in enumerate(pads)]
    padded = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    windows = np.stack([w for _, w in _windows(padded, kernel, strides, ones_dilation)])
    if reduce == "max":
        return windows.max(axis=0)
    if reduce == "l2":
        return np.sqrt((windows ** 2).sum(axis=0))
    if exclude_padding or ceil_mode:
        ones = np.pad(np.ones((1, 1) + x.shape[2:], dtype=np.float32), [(0, 0), (0, 0), *pads])
        counts = np.stack([w for _, w in _windows(ones, kernel, strides, ones_dilation)]).sum(axis=0)
        if not exclude_padding:  # ceil_mode only: the padding that lies inside the input's own padding counts
            explicit = _spatial_pads(x, kernel, strides, ones_dilation, pad_type, pad)
            inner = np.pad(np.ones((1, 1) + tuple(x.shape[2 + d] + lo + hi for d, (lo, hi) in enumerate(explicit)),
                                   dtype=np.float32),
                           [(0, 0), (0, 0)] + [(0, hi - e_hi) for (_, hi), (_, e_hi) in zip(pads, explicit)])
            counts = np.stack([w for _, w in _windows(inner, kernel, strides, ones_dilation)]).sum(axis=0)
        return windows.sum(axis=0) / counts
    return windows.sum(axis=0) / float(np.prod(kernel))


def _axes(axes, rank):
    return None if axes is None else tuple(int(a) % rank for a in np.atleast_1d(axes))


def _reduce(function):
    def run(x, axes=None, keep_dims=False):
        x = _f32(x)
        return function(x, axis=_axes(axes, x.ndim), keepdims=bool(keep_dims))
    return run


def op_layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = _f32(x)
    axes = _axes(axes, x.ndim) or tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + float(epsilon))
    # gamma/beta have the shape of the normalised axes; place them on those axes
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if gamma is not None:
        out = out * _f32(gamma).reshape(shape)
    if beta is not None:
        out = out + _f32(beta).reshape(shape)
    return out


def op_batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _f32(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - _f32(mean).reshape(shape)) / np.sqrt(_f32(variance).reshape(shape) + float(epsilon))
    if gamma is not None:
        out = out * _f32(gamma).reshape(shape)
    if beta is not None:
        out = out + _f32(beta).reshape(shape)
    return out


def op_softmax(x, axis=-1):
    x = _f32(x)
    shifted = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return shifted / shifted.sum(axis=int(axis), keepdims=True)


def _erf(x):
    from scipy.special import erf  # scipy comes with the Core ML extra's dependencies

    return erf(x)


def op_gelu(x, mode="EXACT"):
    from math import sqrt

    x = _f32(x)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + _erf(x / sqrt(2)))


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


def op_scaled_dot_product_attention(query, key, value, attn_mask=None):
    """iOS18 SDPA: softmax(Q K^T / sqrt(E) + mask) V; a bool mask keeps where True."""
    query, key, value = _f32(query), _f32(key), _f32(value)
    scores = query @ np.swapaxes(key, -1, -2) / np.float32(np.sqrt(query.shape[-1]))
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + _f32(mask)
    return op_softmax(scores, axis=-1) @ value


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


def op_matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f32(x), _f32(y)
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def op_linear(x, weight, bias=None):
    out = np.matmul(_f32(x), _f32(weight).T)
    return out if bias is None else out + _f32(bias)


def _per_axis(value, axis, rank: int) -> np.ndarray:
    """A scalar, or a vector along `axis` broadcast against a tensor of `rank`."""
    value = np.asarray(value, np.float32)
    if value.ndim == 0 or axis is None:
        return value
    shape = [1] * rank
    shape[int(axis) % rank] = -1
    return value.reshape(shape)


def op_constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    rank = quantized_data.ndim
    shifted = quantized_data.astype(np.float32) - _per_axis(zero_point, axis, rank)
    return (shifted * _per_axis(scale, axis, rank)).astype(np.asarray(scale).dtype)


def op_constexpr_lut_to_dense(indices=None, lut=None, shape=None, **_):
    if shape is not None:  # iOS16 form: a flat LUT, indices bit-packed into uint8, the shape as an attribute
        lut, indices = np.asarray(lut).ravel(), np.asarray(indices)
        count = int(np.prod(shape))
        if indices.size < count:
            bits = max(1, int(np.ceil(np.log2(lut.size))))
            indices = unpack_bits(indices.tobytes(), bits, False, count)
        return lut[indices.astype(np.int64).ravel()[:count]].reshape([int(s) for s in shape])
    return _lut_per_group(np.asarray(indices), np.asarray(lut), _.get("vector_axis"))


def _lut_per_group(indices: np.ndarray, lut: np.ndarray, vector_axis=None) -> np.ndarray:
    """iOS18 palettization: lut is [*groups, palette, vector]; each block of indices (the indices' shape
    divided by the groups) reads its own palette; vector entries fill `vector_axis` consecutively."""
    groups = lut.shape[:indices.ndim]
    block = [size // count for size, count in zip(indices.shape, groups)]
    group_index = tuple(np.indices(indices.shape)[d] // block[d] for d in range(indices.ndim))
    values = lut[group_index + (indices.astype(np.int64),)]  # indices.shape + (vector,)
    if values.shape[-1] == 1:
        return values[..., 0]
    axis = int(vector_axis) % indices.ndim
    values = np.moveaxis(values, -1, axis + 1)
    shape = list(indices.shape)
    shape[axis] *= lut.shape[-1]
    return values.reshape(shape)


def _blockwise_shift_scale(data: np.ndarray, scale: np.ndarray, offset=None) -> np.ndarray:
    """iOS18 quantization: output = scale * (data - offset), one scale/offset per block (the data's shape
    divided by the scale's)."""
    expand = lambda v: np.asarray(v, np.float32).reshape(  # noqa: E731
        [i for pair in zip(scale.shape, [1] * scale.ndim) for i in pair])
    blocks = data.reshape([i for pair in zip(scale.shape, [d // s for d, s in zip(data.shape, scale.shape)]) for i in pair])
    shifted = blocks.astype(np.float32) - (expand(offset) if offset is not None else 0)
    return (expand(scale) * shifted).reshape(data.shape).astype(scale.dtype)


def op_constexpr_blockwise_shift_scale(data, scale, offset=None):
    return _blockwise_shift_scale(np.asarray(data), np.asarray(scale), offset)


def _densify(mask, nonzero_data) -> np.ndarray:
    dense = np.zeros(np.shape(mask), dtype=np.asarray(nonzero_data).dtype)
    dense[np.asarray(mask) != 0] = nonzero_data
    return dense


def op_constexpr_lut_to_sparse(indices_mask, indices_nonzero_data, lut, vector_axis=None):
    """Palettization applied to sparse indices: (output mask, output nonzero values), via the dense layout."""
    mask = np.asarray(indices_mask)
    dense = _lut_per_group(_densify(mask, indices_nonzero_data), np.asarray(lut), vector_axis)
    if np.asarray(lut).shape[-1] > 1:
        mask = np.repeat(mask, np.asarray(lut).shape[-1], axis=int(vector_axis) % mask.ndim)
    return mask, dense[mask != 0]


def op_constexpr_sparse_blockwise_shift_scale(data_mask, nonzero_data, scale, offset=None):
    mask = np.asarray(data_mask)
    dense = _blockwise_shift_scale(_densify(mask, nonzero_data), np.asarray(scale), offset)
    return mask, dense[mask != 0]


def op_constexpr_sparse_to_dense(nonzero_data, mask, shape=None):
    if shape is None:  # iOS18 form: the mask is a uint1 tensor of the output's shape
        return _densify(mask, nonzero_data)
    dense = np.zeros(int(np.prod(shape)), dtype=np.asarray(nonzero_data).dtype)
    mask = np.asarray(mask)
    if mask.size < dense.size:  # iOS16 form: one bit per element, packed into uint8
        mask = unpack_bits(mask.tobytes(), 1, False, dense.size)
    dense[mask.astype(bool).ravel()[: dense.size]] = nonzero_data
    return dense.reshape([int(s) for s in shape])


def op_classify(probabilities, classes):
    labels = [c if isinstance(c, str) else str(np.asarray(c).ravel()[0]) for c in classes]
    probs = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    return labels[int(np.argmax(probs))], dict(zip(labels, probs.tolist()))


def op_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Across channels: x / (k + alpha / size * sum of x^2 over `size` neighbouring channels) ^ beta."""
    x = _f32(x)
    size = int(size)
    squares = np.pad(x * x, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = sum(squares[:, i:i + x.shape[1]] for i in range(size))
    return x / (float(k) + float(alpha) / size * window) ** float(beta)


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


def op_topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True):
    x = _f32(x)
    axis, k = int(axis) % x.ndim, int(k)
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    indices = np.take(order, np.arange(k), axis=axis)
    values = np.take_along_axis(x, indices, axis=axis)
    return (values, indices.astype(np.int32)) if bool(return_indices) else values


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


def op_scatter(data, indices, updates, axis=0, mode="add", validate_indices=False):
    data = np.array(data)
    axis = int(axis) % data.ndim
    moved, updates = np.moveaxis(data, axis, 0), np.moveaxis(np.asarray(updates), axis, 0)
    for position, index in enumerate(np.asarray(indices).ravel()):
        moved[index] = _scatter_combine(moved[index], updates[position], mode)
    return data


def op_scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    data = np.array(data)
    axis = int(axis) % data.ndim
    indices = np.asarray(indices) % data.shape[axis]
    target = list(np.indices(indices.shape))
    target[axis] = indices
    for where, update in zip(zip(*(t.ravel() for t in target)), np.asarray(updates).ravel()):
        data[where] = _scatter_combine(data[where], update, mode)
    return data


def op_scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    data = np.array(data)
    indices = np.asarray(indices)
    updates = np.asarray(updates).reshape((-1,) + data.shape[indices.shape[-1]:])
    for where, update in zip(indices.reshape(-1, indices.shape[-1]), updates):
        data[tuple(where)] = _scatter_combine(data[tuple(where)], update, mode)
    return data


def op_gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """np.take along `axis`; with batch_dims, the first batch_dims axes of x and indices are paired (iOS16)."""
    x, indices = np.asarray(x), np.asarray(indices).astype(np.int64)
    axis, batch_dims = int(axis) % x.ndim, int(batch_dims)
    if batch_dims < 0:
        batch_dims += indices.ndim
    if batch_dims:
        return np.stack([op_gather(x[b], indices[b], axis - 1, batch_dims - 1) for b in range(x.shape[0])])
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


def op_quantize(input, scale, output_dtype, zero_point=None, axis=None):  # noqa: A002  (MIL's input name)
    x = _f32(input)
    limits = {"int8": (-128, 127), "uint8": (0, 255)}[str(output_dtype)]
    zero = _per_axis(zero_point, axis, x.ndim) if zero_point is not None else 0
    quantized = np.clip(np.round(x / _per_axis(scale, axis, x.ndim)) + zero, *limits)
    return quantized.astype(CAST[str(output_dtype)])


def op_dequantize(input, scale, zero_point=None, axis=None):  # noqa: A002
    x = np.asarray(input).astype(np.float32)
    zero = _per_axis(zero_point, axis, x.ndim) if zero_point is not None else 0
    return (x - zero) * _per_axis(scale, axis, x.ndim)


# ---- recurrent layers (x is [sequence, batch, input]) ----

RECURRENT_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh, "scaled_tanh": np.tanh,  # alpha = beta = 1
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1), "sigmoid_hard": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "relu": lambda x: np.maximum(x, 0), "linear": lambda x: x,
}


def _activation(name) -> Callable[[np.ndarray], np.ndarray]:
    if str(name).lower() not in RECURRENT_ACTIVATIONS:
        raise UnsupportedOp(f"recurrent activation {name!r}")
    return RECURRENT_ACTIVATIONS[str(name).lower()]


def _run_sequence(cell, x, state, reverse: bool):
    """Steps `cell(x_t, state) -> state` (state[0] is h) over the sequence; outputs in processing order."""
    outputs = []
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        state = cell(x[t], state)
        outputs.append(state[0])
    return np.stack(outputs), state


def _lstm_cell(weight_ih, weight_hh, bias, peephole, act_gate, act_cell, act_out, clip):
    hidden = np.shape(weight_hh)[-1]
    bias = np.zeros(4 * hidden, np.float32) if bias is None else _f32(bias)
    p_i, p_f, p_o = np.split(np.zeros(3 * hidden, np.float32) if peephole is None else _f32(peephole), 3)

    def cell(x_t, state):
        h, c = state
        i, f, o, z = np.split(x_t @ _f32(weight_ih).T + h @ _f32(weight_hh).T + bias, 4, axis=-1)  # MIL's ifoz
        i, f = act_gate(i + c * p_i), act_gate(f + c * p_f)
        c = f * c + i * act_cell(z)
        if clip is not None:
            c = np.clip(c, -float(clip), float(clip))
        h = act_gate(o + c * p_o) * act_out(c)
        return h, c
    return cell


def op_lstm(x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None, weight_ih_back=None,
            weight_hh_back=None, bias_back=None, peephole_back=None, direction="forward", output_sequence=False,
            recurrent_activation="sigmoid", cell_activation="tanh", activation="tanh", clip=None):
    """Returns (outputs [s or 1, b, D*H], h [b, D*H], c [b, D*H]); bidirectional states are [forward | backward]."""
    x, h0, c0 = _f32(x), _f32(initial_h), _f32(initial_c)
    acts = (_activation(recurrent_activation), _activation(cell_activation), _activation(activation), clip)
    forward = _lstm_cell(weight_ih, weight_hh, bias, peephole, *acts)
    if str(direction) != "bidirectional":
        outputs, (h, c) = _run_sequence(forward, x, (h0, c0), reverse=str(direction) == "reverse")
        return (outputs if output_sequence else outputs[-1:]), h, c
    hidden = np.shape(weight_hh)[-1]
    backward = _lstm_cell(weight_ih_back, weight_hh_back, bias_back, peephole_back, *acts)
    out_f, (h_f, c_f) = _run_sequence(forward, x, (h0[:, :hidden], c0[:, :hidden]), reverse=False)
    out_b, (h_b, c_b) = _run_sequence(backward, x, (h0[:, hidden:], c0[:, hidden:]), reverse=True)
    outputs = np.concatenate([out_f, out_b[::-1]], axis=-1)  # the backward half aligned with input time
    last = np.concatenate([h_f, h_b], axis=-1)[None]
    return (outputs if output_sequence else last), last[0], np.concatenate([c_f, c_b], axis=-1)


def op_gru(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
           recurrent_activation="sigmoid", activation="tanh", reset_after=False, input_bias=None):
    """MIL's gate order is [reset | output (new) | update]; iOS18 adds reset_after (PyTorch's GRU) and
    input_bias. Returns (outputs [s or 1, b, H], h [b, H])."""
    hidden = np.shape(weight_hh)[-1]
    b_r, b_o, b_z = np.split(np.zeros(3 * hidden, np.float32) if bias is None else _f32(bias), 3)
    ib = np.zeros(3 * hidden, np.float32) if input_bias is None else _f32(input_bias)
    w_hr, w_ho, w_hz = np.split(_f32(weight_hh), 3)
    gate, act = _activation(recurrent_activation), _activation(activation)

    def cell(x_t, state):
        (h,) = state
        x_r, x_o, x_z = np.split(x_t @ _f32(weight_ih).T + ib, 3, axis=-1)
        r, z = gate(x_r + h @ w_hr.T + b_r), gate(x_z + h @ w_hz.T + b_z)
        o = act(x_o + r * (h @ w_ho.T + b_o)) if bool(reset_after) else act(x_o + (r * h) @ w_ho.T + b_o)
        return ((1 - z) * o + z * h,)

    outputs, (h,) = _run_sequence(cell, _f32(x), (_f32(initial_h),), reverse=str(direction) == "reverse")
    return (outputs if output_sequence else outputs[-1:]), h


def op_rnn(x, initial_h, weight_ih, weight_hh, bias=None, direction="forward", output_sequence=False,
           activation="tanh"):
    hidden = np.shape(weight_hh)[-1]
    bias = np.zeros(hidden, np.float32) if bias is None else _f32(bias)
    act = _activation(activation)

    def cell(x_t, state):
        return (act(x_t @ _f32(weight_ih).T + state[0] @ _f32(weight_hh).T + bias),)

    outputs, (h,) = _run_sequence(cell, _f32(x), (_f32(initial_h),), reverse=str(direction) == "reverse")
    return (outputs if output_sequence else outputs[-1:]), h


def _argreduce(function, x, axis, keep_dims):
    out = function(np.asarray(x), axis=int(axis)).astype(np.int32)
    return np.expand_dims(out, int(axis)) if keep_dims else out


def _binary(function):
    return lambda x, y: function(_f32(x), _f32(y))


def _unary(function):
    return lambda x: function(_f32(x))


OPS: dict[str, Callable[..., Any]] = {
    "conv": op_conv, "linear": op_linear, "matmul": op_matmul,
    "add": _binary(np.add), "sub": _binary(np.subtract), "mul": _binary(np.multiply),
    "real_div": _binary(np.divide), "maximum": _binary(np.maximum), "minimum": _binary(np.minimum),
    "pow": _binary(np.power), "floor_div": lambda x, y: np.floor_divide(x, y), "mod": lambda x, y: np.mod(x, y),
    "greater": lambda x, y: np.greater(x, y), "less": lambda x, y: np.less(x, y), "equal": lambda x, y: np.equal(x, y),
    "relu": _unary(lambda x: np.maximum(x, 0)), "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "clip": lambda x, alpha, beta: np.clip(_f32(x), float(alpha), float(beta)),
    "sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))), "silu": _unary(lambda x: x / (1 + np.exp(-x))),
    "tanh": _unary(np.tanh), "exp": _unary(np.exp), "log": lambda x, epsilon=1e-45: np.log(_f32(x) + float(epsilon)), "sqrt": _unary(np.sqrt),
    "rsqrt": lambda x, epsilon=1e-12: 1 / np.sqrt(_f32(x) + float(epsilon)),
    "abs": _unary(np.abs), "square": _unary(np.square), "ceil": lambda x: np.ceil(x), "floor": lambda x: np.floor(x),
    "round": lambda x: np.round(x), "sign": lambda x: np.sign(x),
    "inverse": lambda x, epsilon=1e-4: 1 / (_f32(x) + float(epsilon)),
    "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(float(alpha) * _f32(x) + float(beta), 0, 1),
    "thresholded_relu": lambda x, alpha=1.0: np.where(_f32(x) >= float(alpha), _f32(x), 0).astype(np.float32),
    "elu": lambda x, alpha=1.0: np.where(_f32(x) > 0, _f32(x), float(alpha) * (np.exp(_f32(x)) - 1)),
    "leaky_relu": lambda x, alpha=0.01: np.where(_f32(x) >= 0, _f32(x), float(alpha) * _f32(x)),
    "clamped_relu": lambda x, alpha=0.0, beta=6.0: np.minimum(
        np.where(_f32(x) >= 0, _f32(x), float(alpha) * _f32(x)), float(beta)),
    "linear_activation": lambda x, alpha=1.0, beta=0.0: float(alpha) * _f32(x) + float(beta),
    "prelu": lambda x, alpha: np.where(_f32(x) >= 0, _f32(x),
                                       _f32(alpha).reshape((1, -1) + (1,) * (np.ndim(x) - 2)) * _f32(x)),
    "scaled_tanh": lambda x, alpha=1.0, beta=1.0: float(alpha) * np.tanh(float(beta) * _f32(x)),
    "softplus": _unary(lambda x: np.logaddexp(0, x)),
    "softplus_parametric": lambda x, alpha, beta: _f32(alpha).reshape((1, -1) + (1,) * (np.ndim(x) - 2)) * np.logaddexp(
        0, _f32(beta).reshape((1, -1) + (1,) * (np.ndim(x) - 2)) * _f32(x)),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "gelu": op_gelu,
    "greater_equal": lambda x, y: np.greater_equal(x, y), "less_equal": lambda x, y: np.less_equal(x, y),
    "not_equal": lambda x, y: np.not_equal(x, y), "logical_and": lambda x, y: np.logical_and(x, y),
    "logical_or": lambda x, y: np.logical_or(x, y), "logical_xor": lambda x, y: np.logical_xor(x, y),
    "logical_not": lambda x: np.logical_not(x),
    "acos": _unary(np.arccos), "asin": _unary(np.arcsin), "atan": _unary(np.arctan), "atanh": _unary(np.arctanh),
    "cos": _unary(np.cos), "cosh": _unary(np.cosh), "sin": _unary(np.sin), "sinh": _unary(np.sinh),
    "tan": _unary(np.tan), "exp2": _unary(np.exp2), "erf": _unary(_erf),
    "threshold": lambda x, alpha: np.maximum(_f32(x), float(alpha)),
    "reduce_argmax": lambda x, axis=-1, keep_dims=False, output_dtype="int32": _argreduce(np.argmax, x, axis, keep_dims),
    "reduce_argmin": lambda x, axis=-1, keep_dims=False, output_dtype="int32": _argreduce(np.argmin, x, axis, keep_dims),
    "reduce_prod": _reduce(np.prod), "reduce_sum_square": _reduce(lambda x, **k: np.sum(x * x, **k)),
    "reduce_l1_norm": _reduce(lambda x, **k: np.sum(np.abs(x), **k)),
    "reduce_log_sum": _reduce(lambda x, **k: np.log(np.sum(x, **k))),
    "reduce_log_sum_exp": _reduce(lambda x, **k: np.log(np.sum(np.exp(x), **k))),
    "l2_pool": lambda x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False:
        _pool(x, kernel_sizes, strides, pad_type, pad, "l2", 0.0, ceil_mode),
    "stack": lambda values, axis: np.stack([np.asarray(v) for v in values], axis=int(axis)),
    "reverse": lambda x, axes=None: np.flip(x, axis=_axes(axes, np.ndim(x))),
    "slice_by_size": lambda x, begin, size: x[tuple(
        slice(int(b), None if int(z) == -1 else int(b) + int(z)) for b, z in zip(begin, size))],
    "instance_norm": lambda x, gamma=None, beta=None, epsilon=1e-5: op_layer_norm(
        x, axes=list(range(2, np.ndim(x))), epsilon=epsilon) * (1 if gamma is None else _f32(gamma).reshape(
            (1, -1) + (1,) * (np.ndim(x) - 2))) + (0 if beta is None else _f32(beta).reshape((1, -1) + (1,) * (np.ndim(x) - 2))),
    "l2_norm": lambda x, axes=None, epsilon=1e-6: _f32(x) / np.sqrt(np.maximum(np.sum(
        _f32(x) ** 2, axis=_axes(axes, np.ndim(x)) or tuple(range(1, np.ndim(x))), keepdims=True), float(epsilon))), "softmax": op_softmax, "layer_norm": op_layer_norm, "batch_norm": op_batch_norm,
    "reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_l2_norm": lambda x, axes=None, keep_dims=False: np.sqrt(
        np.sum(_f32(x) ** 2, axis=_axes(axes, np.ndim(x)), keepdims=bool(keep_dims))),
    "avg_pool": lambda x, kernel_sizes, strides, pad_type, pad=None, exclude_padding_from_average=False, ceil_mode=False:
        _pool(x, kernel_sizes, strides, pad_type, pad, "mean", 0.0, ceil_mode, bool(exclude_padding_from_average)),
    "max_pool": lambda x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False:
        _pool(x, kernel_sizes, strides, pad_type, pad, "max", -np.inf, ceil_mode),
    "reshape": op_reshape, "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=_axes(axes, np.ndim(x))),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in np.atleast_1d(axes))),
    "concat": op_concat, "split": op_split, "slice_by_index": op_slice_by_index, "pad": op_pad,
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "shape": lambda x: np.array(np.shape(x), dtype=np.int32),
    "gather": op_gather,
    "cast": lambda x, dtype: np.asarray(x).astype(CAST[dtype]),
    "identity": lambda x: x,
    "constexpr_affine_dequantize": op_constexpr_affine_dequantize,
    "constexpr_lut_to_dense": op_constexpr_lut_to_dense,
    "constexpr_sparse_to_dense": op_constexpr_sparse_to_dense,
    "constexpr_blockwise_shift_scale": op_constexpr_blockwise_shift_scale,
    "constexpr_lut_to_sparse": op_constexpr_lut_to_sparse,
    "constexpr_sparse_blockwise_shift_scale": op_constexpr_sparse_blockwise_shift_scale,
    "quantize": op_quantize, "dequantize": op_dequantize,
    "constexpr_cast": lambda source_val, output_dtype: np.asarray(source_val).astype(CAST[output_dtype]),
    "classify": op_classify,
    "conv_transpose": op_conv_transpose, "local_response_norm": op_local_response_norm,
    "sliding_windows": op_sliding_windows, "depth_to_space": op_depth_to_space, "space_to_depth": op_space_to_depth,
    "pixel_shuffle": op_pixel_shuffle, "space_to_batch": op_space_to_batch, "batch_to_space": op_batch_to_space,
    "reverse_sequence": op_reverse_sequence,
    "upsample_bilinear": op_upsample_bilinear,
    "resize_bilinear": lambda x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT":
        _resize_bilinear(x, int(target_size_height), int(target_size_width), str(sampling_mode)),
    "upsample_nearest_neighbor": lambda x, scale_factor_height=1, scale_factor_width=1: _nearest(
        np.asarray(x), int(np.floor(np.shape(x)[-2] * float(scale_factor_height))),
        int(np.floor(np.shape(x)[-1] * float(scale_factor_width)))),
    "resize_nearest_neighbor": lambda x, target_size_height, target_size_width: _nearest(
        np.asarray(x), int(target_size_height), int(target_size_width)),
    "crop": op_crop, "topk": op_topk, "cumsum": op_cumsum, "one_hot": op_one_hot, "band_part": op_band_part,
    "flatten2d": lambda x, axis=1: np.reshape(x, (int(np.prod(np.shape(x)[:int(axis)])), int(np.prod(np.shape(x)[int(axis):])))),
    "fill": lambda shape, value=0.0: np.full([int(d) for d in np.asarray(shape).ravel()], value),
    "range_1d": lambda end, start, step: np.arange(start, end, step),
    "argsort": lambda x, axis=-1, ascending=False: np.argsort(
        np.asarray(x) if ascending else -np.asarray(x), axis=int(axis), kind="stable").astype(np.int32),
    "non_zero": lambda x: np.transpose(np.nonzero(x)).astype(np.int32),
    "gather_along_axis": lambda x, indices, axis=0, validate_indices=False: np.take_along_axis(
        np.asarray(x), np.asarray(indices) % np.shape(x)[int(axis)], axis=int(axis)),
    "gather_nd": op_gather_nd, "scatter": op_scatter, "scatter_along_axis": op_scatter_along_axis,
    "scatter_nd": op_scatter_nd,
    "pixel_unshuffle": lambda x, downscale_factor: op_space_to_depth_crd(x, int(downscale_factor)),
    "fill_like": lambda ref_tensor, value=0.0: np.full(np.shape(ref_tensor), value),
    "reshape_like": op_reshape_like,
    "lstm": op_lstm, "gru": op_gru, "rnn": op_rnn,
    "slice_update": op_slice_update, "scaled_dot_product_attention": op_scaled_dot_product_attention,
    "crop_resize": op_crop_resize, "resample": op_resample, "affine": op_affine, "resize": op_resize,
    "einsum": lambda values, equation: np.einsum(str(equation), *[_f32(v) for v in values]),
}

# ops whose meaning changed in a later opset (CoreML7 = iOS17): name -> (first opset number, implementation)
CHANGED: dict[str, tuple[int, Callable[..., Any]]] = {
    "reshape": (7, op_reshape_ios17), "crop_resize": (7, op_crop_resize_ios17)}


def implementation_of(name: str, opset: str) -> Callable[..., Any] | None:
    """The op's implementation for this program's opset ("CoreML5".. ), None if unknown."""
    if name in CHANGED and opset.startswith("CoreML") and int(opset.removeprefix("CoreML")) >= CHANGED[name][0]:
        return CHANGED[name][1]
    return OPS.get(name)
