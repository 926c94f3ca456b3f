"""Network layers: convolution, pooling, normalisation, activations that take parameters, matmul/linear,
attention, the classifier output."""

from __future__ import annotations

import itertools

import numpy as np

from mvkit.coreml.ops.common import UnsupportedOp, _axes, _f32


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
    if any(before or after for before, after in pads):  # 1x1 convolutions have none: no copy
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


def op_scaled_dot_product_attention(query, key, value, attn_mask=None):
    """iOS18 SDPA: softmax(Q K^T / sqrt(E) + mask) V; a bool mask keeps where True."""
    query, key, value = _f32(query), _f32(key), _f32(value)
    scores = query @ np.swapaxes(key, -1, -2) / np.float32(np.sqrt(query.shape[-1]))
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + _f32(mask)
    return op_softmax(scores, axis=-1) @ value


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
