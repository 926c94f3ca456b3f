"""What every op module shares: MIL dtypes, sub-byte unpacking, the unsupported-op error, small helpers."""

from __future__ import annotations

import weakref
from typing import Any

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


class PredictionError(MvkitError):
    """The inputs make the program fail at run time on the phone too (e.g. an out-of-bound index with
    validate_indices)."""


# float32 copies of an fp16 program's constants (its weights), made once at load instead of at every op that reads
# them: a quarter of the interpreter's time on an fp16 EfficientNet-Lite0. By the constant's id, dropped with it.
_F32_OF_CONSTANT: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def register_constant(value: Any) -> Any:
    """Called at load for each program constant, so `_f32` finds its float32 copy (read-only: it is shared)."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        key, copy = id(value), value.astype(np.float32)
        copy.setflags(write=False)
        _F32_OF_CONSTANT[key] = (weakref.ref(value, lambda _, key=key: _F32_OF_CONSTANT.pop(key, None)), copy)
    return value


def _f32(x):
    x = np.asarray(x)
    if x.dtype != np.float16:
        return x
    known = _F32_OF_CONSTANT.get(id(x))
    return known[1] if known is not None and known[0]() is x else x.astype(np.float32)


def _axes(axes, rank):
    return None if axes is None else tuple(int(a) % rank for a in np.atleast_1d(axes))


def _reduce(function):
    def run(x, axes=None, keep_dims=False):
        x = _f32(x)
        return function(x, axis=_axes(axes, x.ndim), keepdims=bool(keep_dims))
    return run


def _per_axis(value, axis, rank: int) -> np.ndarray:
    """A scalar, or a vector along `axis` broadcast against a tensor of `rank`."""
    value = np.asarray(value, np.float32)
    if value.ndim == 0 or axis is None:
        return value
    shape = [1] * rank
    shape[int(axis) % rank] = -1
    return value.reshape(shape)


def _argreduce(function, x, axis, keep_dims):
    out = function(np.asarray(x), axis=int(axis)).astype(np.int32)
    return np.expand_dims(out, int(axis)) if keep_dims else out


def _binary(function):
    return lambda x, y: function(_f32(x), _f32(y))


def _unary(function):
    return lambda x: function(_f32(x))
