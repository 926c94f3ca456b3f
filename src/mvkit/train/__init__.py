"""Training. For now: a linear probe (head-only fit on frozen features) used by the demo."""

from mvkit.train.probe import fit_linear_head

__all__ = ["fit_linear_head"]
