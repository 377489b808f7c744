"""Quantization-aware training: fake-quantized linear inputs, learned clip values, kurtosis penalty.

One step (Nrusimha et al. 2024, arXiv 2404.03605): the forward runs every quantized linear
layer on its fake-quantized input; forward hooks reduce each layer's output to its kurtosis
on the way (`OutputKurtosis`), so the loss CE + λ·Kurt needs no second pass. Weights stay in
floating point during QAT; they are quantized afterwards (RTN or GPTQ). The clip values learn
with their own learning rate: each is one scalar per tensor (its gradient sums the clipped
elements and every element's rounding error, see `fake_quant`), and at the weights'
fine-tuning learning rate they would hardly move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from carina.workloads.config import OptimizerSpec
from carina.workloads.models.kurtosis import OutputKurtosis
from carina.workloads.models.quant_layers import clip_parameters, quant_layers, with_clip_group
from carina.workloads.models.transformer import Transformer, param_groups


def build_optimizer(model: Transformer, spec: OptimizerSpec, clip_lr: float) -> torch.optim.AdamW:
    """AdamW over µP's parameter groups plus one group for the clip values (no decay).

    Every group carries `lr_scale`: the loop sets lr = schedule_lr · lr_scale.
    """
    groups = with_clip_group(param_groups(model, spec.weight_decay), model, clip_lr / spec.lr)
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)


@dataclass(frozen=True)
class StepResult:
    """Losses of one QAT step (means over the batch)."""

    loss: float  # CE + λ·Kurt, what was minimized
    ce: float
    kurtosis: float  # mean output kurtosis over the regularized layers


def qat_step(
    model: Transformer,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    kurtosis_lambda: float,
    grad_clip: float,
    lr: float,
    hooks: OutputKurtosis,
) -> StepResult:
    """One optimizer step of CE + λ·Kurt at base learning rate `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    with hooks:
        _, ce = model(x, y)
    assert ce is not None
    kurt = hooks.loss()
    loss = ce + kurtosis_lambda * kurt if kurtosis_lambda > 0 else ce
    loss.backward()
    if grad_clip > 0:
        # The clip values' gradients are sums over whole tensors: keep them out of the norm.
        clips = {id(p) for p in clip_parameters(model)}
        nn.utils.clip_grad_norm_([p for p in model.parameters() if id(p) not in clips], grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for layer in quant_layers(model).values():
        layer.act_quant.clamp_order()
    return StepResult(float(loss.detach()), float(ce.detach()), float(kurt.detach()))
