"""Losses: label loss with hard or soft (MixUp/CutMix) targets, and knowledge distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

_soft_target_ce = SoftTargetCrossEntropy()


def label_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy; targets are class indices or per-class probabilities (soft targets from MixUp)."""
    if targets.dtype.is_floating_point:  # soft targets already carry smoothing (timm's mixup_target)
        return _soft_target_ce(logits.float(), targets)
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      alpha: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)).

    T^2 keeps the gradient scale of the soft term independent of T (Hinton et al. 2015)."""
    hard = label_loss(student_logits, targets, label_smoothing)
    return alpha * hard + (1.0 - alpha) * teacher_loss(student_logits, teacher_logits, temperature)


def teacher_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    soft = F.kl_div(F.log_softmax(student_logits.float() / temperature, dim=-1),
                    F.log_softmax(teacher_logits.float() / temperature, dim=-1),
                    reduction="batchmean", log_target=True)
    return temperature ** 2 * soft
