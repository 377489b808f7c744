"""Sharpness-aware minimization (Foret et al., "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021), the teacher's optimizer step in DeiT-LT.

SAM minimizes the worst loss in a ball of radius ρ around the weights:

    ε = ρ · ∇L(w) / ‖∇L(w)‖₂,   then step with ∇L(w + ε) from w.

DeiT-LT trains its CNN teacher this way: flatter minima give it low-rank, generalizable
features, which the student inherits through distillation (DeiT-LT §4.3). Under DDP both
backward passes average the gradients across ranks, so every rank takes the same ε. Batch
norm's running statistics are updated by the first pass only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def frozen_batch_norm_stats(model: nn.Module) -> Iterator[None]:
    """Batch norm keeps its running statistics (momentum 0) inside the block."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def sam_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[], torch.Tensor],
    rho: float,
) -> torch.Tensor:
    """One SAM step on the batch `loss_fn` computes (called twice); the first loss, detached."""
    loss = loss_fn()
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm(2) for p in params]), 2)
        scale = rho / (norm + 1e-12)
        eps = [p.grad * scale for p in params]
        for p, e in zip(params, eps, strict=True):
            p.add_(e)  # w + ε: the worst point of the ball, to first order
    optimizer.zero_grad(set_to_none=True)
    with frozen_batch_norm_stats(model):
        loss_fn().backward()
    with torch.no_grad():
        for p, e in zip(params, eps, strict=True):
            p.sub_(e)  # back to w, keeping ∇L(w + ε)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
