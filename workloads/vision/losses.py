"""DeiT-LT's losses: cross-entropy for the class token, hard distillation for the distillation
token, and deferred re-weighting (DRW) of the latter.

    L = ½ · CE(cls(x), y) + ½ · CE_w(dist(x), argmax teacher(x))         (DeiT-LT, eq. 2-3)

x is the strong (or, switched off, weak) view, y its (mixed) ground truth, and the teacher sees
the very same x. w is 1 before DRW starts and the class-balanced weights after (Cui et al.,
CVPR 2019): w_c ∝ (1 - β) / (1 - β^n_c), n_c the class's training count, normalized to sum
to the number of classes. Without distillation, L = CE(cls(x), y) (a plain ViT).

Shapes: B batch, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def drw_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """Class-balanced weights by effective number, (1 - β) / (1 - β^n_c), summing to K (K,)."""
    n = torch.tensor(list(counts), dtype=torch.float64)
    effective = (1.0 - torch.pow(beta, n)) / (1.0 - beta) if beta > 0 else torch.ones_like(n)
    w = 1.0 / effective
    return (w / w.sum() * len(counts)).float()


def drw_on(epoch: int, epochs: int, start: float) -> bool:
    """Whether DRW applies in `epoch` (0-based): from epoch ⌊start · epochs⌋ on."""
    return epoch >= int(start * epochs)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -Σ_k t_k log softmax(logits)_k, for soft targets (B, K)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def hard_distillation(
    dist_logits: torch.Tensor, teacher_logits: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """CE of the distillation head against the teacher's argmax, class-weighted under DRW."""
    labels = teacher_logits.argmax(dim=-1)  # (B,)
    w = None if weights is None else weights.to(dist_logits.device)
    return F.cross_entropy(dist_logits.float(), labels, weight=w)


@dataclass(frozen=True)
class StudentLoss:
    """The loss to minimize and its parts (detached parts for the step's log line)."""

    total: torch.Tensor
    ce: torch.Tensor
    distill: torch.Tensor | None


def student_loss(
    cls_logits: torch.Tensor,
    dist_logits: torch.Tensor | None,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    weights: torch.Tensor | None,
) -> StudentLoss:
    """½ CE + ½ distillation, or CE alone when there is no distillation head or teacher."""
    ce = soft_cross_entropy(cls_logits, targets)
    if dist_logits is None or teacher_logits is None:
        return StudentLoss(ce, ce.detach(), None)
    kd = hard_distillation(dist_logits, teacher_logits, weights)
    return StudentLoss(0.5 * ce + 0.5 * kd, ce.detach(), kd.detach())
