"""Compressed weights (constexpr ops, iOS16 and iOS18 forms) and iOS17 quantize/dequantize, decompressed exactly."""

from __future__ import annotations

import numpy as np

from mvkit.coreml.ops.common import CAST, _f32, _per_axis, unpack_bits


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
