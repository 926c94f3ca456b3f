"""Recurrent layers (lstm, gru, rnn); x is [sequence, batch, input]. Loops over time steps only."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mvkit.coreml.ops.common import UnsupportedOp, _f32



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
