"""The MIL ops of Core ML ML programs, on numpy: one function per op, taking the op's named inputs (decoded)
and returning one value or a tuple; the modules split them by kind, this one maps MIL names to them. Semantics follow the op definitions in coremltools (mil/ops/defs) and
are checked against coremltools' own op tests (benchmarks/coreml_conformance.py). Written here: no library
runs MIL outside macOS.

- Loops run over kernel positions or blocks, never over pixels.
- Ops compute in float32; the interpreter stores each result in the dtype the program declares.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from mvkit.coreml.ops.common import (
    CAST, _argreduce, _axes, _binary, _f32, _reduce, _unary)
from mvkit.coreml.ops.compression import (
    op_constexpr_affine_dequantize, op_constexpr_blockwise_shift_scale, op_constexpr_lut_to_dense,
    op_constexpr_lut_to_sparse, op_constexpr_sparse_blockwise_shift_scale, op_constexpr_sparse_to_dense,
    op_dequantize, op_quantize)
from mvkit.coreml.ops.image import (
    _nearest, _resize_bilinear, op_affine, op_crop, op_crop_resize, op_crop_resize_ios17, op_resample,
    op_resize, op_upsample_bilinear)
from mvkit.coreml.ops.nn import (
    _erf, _pool, op_batch_norm, op_classify, op_conv, op_conv_transpose, op_gelu, op_layer_norm, op_linear,
    op_local_response_norm, op_matmul, op_scaled_dot_product_attention, op_softmax)
from mvkit.coreml.ops.recurrent import (
    op_gru, op_lstm, op_rnn)
from mvkit.coreml.ops.sampling import (
    op_random_bernoulli, op_random_categorical, op_random_normal, op_random_uniform)
from mvkit.coreml.ops.state import op_coreml_update_state, op_read_state, op_write_state
from mvkit.coreml.ops.tensor import (
    op_make_list, op_list_write, op_list_scatter,
    op_band_part, op_batch_to_space, op_concat, op_cumsum, op_depth_to_space, op_gather, op_gather_nd,
    op_one_hot, op_pad, op_pixel_shuffle, op_reshape, op_reshape_ios17, op_reshape_like, op_reverse_sequence,
    op_scatter, op_scatter_along_axis, op_scatter_nd, op_slice_by_index, op_slice_update, op_sliding_windows,
    op_space_to_batch, op_space_to_depth, op_space_to_depth_crd, op_split, op_topk)

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
    "identity": lambda x: x, "select": lambda cond, a, b: np.where(cond, a, b),
    "make_list": op_make_list, "list_write": op_list_write, "list_scatter": op_list_scatter,
    "list_read": lambda ls, index: ls[int(index)], "list_length": lambda ls: np.int32(len(ls)),
    "list_gather": lambda ls, indices: np.stack([ls[int(i)] for i in np.asarray(indices).ravel()]),
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
    "random_bernoulli": op_random_bernoulli, "random_categorical": op_random_categorical,
    "random_normal": op_random_normal, "random_uniform": op_random_uniform,
    "read_state": op_read_state, "write_state": op_write_state, "coreml_update_state": op_coreml_update_state,
    "einsum": lambda values, equation: np.einsum(str(equation), *[_f32(v) for v in values]),
}

# ops whose meaning changed in a later opset (CoreML7 = iOS17): name -> (first opset number, implementation)
CHANGED: dict[str, tuple[int, Callable[..., Any]]] = {
    "reshape": (7, op_reshape_ios17), "crop_resize": (7, op_crop_resize_ios17),
    "scatter": (7, partial(op_scatter, negative_wraps=False)),
    "scatter_along_axis": (7, partial(op_scatter_along_axis, negative_wraps=False)),
    "scatter_nd": (7, partial(op_scatter_nd, negative_wraps=False))}


def implementation_of(name: str, opset: str) -> Callable[..., Any] | None:
    """The op's implementation for this program's opset ("CoreML5".. ), None if unknown."""
    if name in CHANGED and opset.startswith("CoreML") and int(opset.removeprefix("CoreML")) >= CHANGED[name][0]:
        return CHANGED[name][1]
    return OPS.get(name)
