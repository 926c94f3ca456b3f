"""Private APIs of other libraries that mvkit needs, one small shim each, with the version it was checked
against. When a library changes, this is the one place to look."""

from __future__ import annotations


def reset_accelerate_precision() -> None:
    """accelerate keeps one global mixed-precision setting per process; a second training run in the same process
    (the Python API, benchmarks) may want another. Resets that state only, keeping the distributed state (the
    process group). Private: AcceleratorState._reset_state, checked with accelerate 1.15.0."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def fuse_conv_bn(graph) -> None:
    """Fold each BatchNorm of a captured (eval-mode) graph into the conv before it, with the BatchNorm's own eps,
    as torchao's prepare_pt2e does for PTQ. Private: torchao.quantization.pt2e.utils._fuse_conv_bn_, checked
    with torchao 0.18.0."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(graph)
