"""The random ops (iOS15 random_*): numpy's generator draws from the same distributions. Core ML's own random
streams cannot be reproduced, so a seeded op gives the same numbers run after run here, not the phone's numbers:
check such models by their statistics, not their values."""

from __future__ import annotations

import numpy as np


def _generator(seed) -> np.random.Generator:
    seed = int(seed)
    return np.random.default_rng(None if seed == -1 else seed)  # -1: unseeded, as in MIL


def _shape(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in np.asarray(shape).ravel())


def op_random_bernoulli(shape, prob=0.5, seed=-1):
    return (_generator(seed).random(_shape(shape)) < float(prob)).astype(np.float32)


def op_random_normal(shape, mean=0.0, stddev=1.0, seed=-1):
    return _generator(seed).normal(float(mean), float(stddev), _shape(shape)).astype(np.float32)


def op_random_uniform(shape, low=0.0, high=1.0, seed=-1):
    return _generator(seed).uniform(float(low), float(high), _shape(shape)).astype(np.float32)


def op_random_categorical(x, mode="logits", size=1, seed=-1):
    """`size` class indices per row of `x` (logits or probabilities over the last axis)."""
    x = np.asarray(x, dtype=np.float64)
    if str(mode) == "logits":
        x = np.exp(x - x.max(axis=-1, keepdims=True))
    probs = (x / x.sum(axis=-1, keepdims=True)).reshape(-1, x.shape[-1])
    generator = _generator(seed)
    rows = [generator.choice(len(p), size=int(size), p=p) for p in probs]
    return np.array(rows, dtype=np.float32).reshape(x.shape[:-1] + (int(size),))
