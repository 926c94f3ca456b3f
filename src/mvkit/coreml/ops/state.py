"""Stateful programs (iOS18): a state input is a buffer that lives across predictions, like a KV cache. It is
held in a StateTensor that read_state reads and write_state overwrites; Program.make_state makes them. (The
builder's coreml_update_state is saved as write_state followed by read_state.)"""

from __future__ import annotations

import numpy as np


class StateTensor:
    """One state buffer; starts as zeros, as Core ML's new states do."""

    def __init__(self, shape: tuple[int, ...], dtype):
        self.value = np.zeros(shape, dtype=dtype)


def op_read_state(input):  # noqa: A002 - MIL's argument name
    return input.value.copy()


def op_write_state(input, data):  # noqa: A002
    input.value = np.asarray(data, dtype=input.value.dtype).reshape(input.value.shape).copy()


def op_coreml_update_state(state, value):
    op_write_state(state, value)
    return state.value.copy()
