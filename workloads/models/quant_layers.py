"""Which layers are quantized, and switching a model between its precisions.

Quantized: every nn.Linear inside the transformer blocks (attention wq, wk, wv, wo and the
SwiGLU w1, w3, w2). Kept in floating point: the token embedding, the norms, the output head
(its input feeds the softmax over the vocabulary directly, and W4A4 papers keep it 16-bit),
DS-MoE routers and expert tensors (experts are einsum parameters, not linear layers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from carina.workloads.models.fake_quant import (
    MSE_SAMPLE,
    QuantizedWeight,
    QuantLinear,
    mse_clip_range,
)

ROUTER_SUFFIX = ".router"


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Names and modules of the linear layers that get quantized, in forward order."""
    out: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Linear)
            and name.startswith("blocks.")
            and not name.endswith(ROUTER_SUFFIX)
        ):
            out[name] = module
    return out


def attach_quantizers(model: nn.Module, activation_bits: int) -> dict[str, QuantLinear]:
    """Replace the quantizable linears by QuantLinears sharing their weights (idempotent)."""
    layers: dict[str, QuantLinear] = {}
    for name, linear in quantizable_linears(model).items():
        if isinstance(linear, QuantLinear):  # a model pretrained with QAT: keep its clip values
            linear.act_quant.bits = activation_bits
            linear.act_quant.enabled = activation_bits < 16
            layers[name] = linear
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        q = QuantLinear.from_linear(linear, activation_bits)
        setattr(parent, attr, q)
        layers[name] = q
    return layers


def quant_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """The QuantLinears of a model with quantizers attached."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def set_precision(model: nn.Module, quantize_weights: bool, quantize_activations: bool) -> None:
    """Run with dequantized weights (once PTQ set them) and/or fake-quantized activations."""
    for layer in quant_layers(model).values():
        layer.use_quantized_weight = quantize_weights
        layer.act_quant.enabled = quantize_activations and layer.act_quant.bits < 16


def set_quantized_weights(model: nn.Module, qweights: dict[str, QuantizedWeight]) -> None:
    """Give each layer its dequantized weight (used while `use_quantized_weight`)."""
    layers = quant_layers(model)
    for name, qw in qweights.items():
        w = layers[name].weight
        layers[name].weight_q = qw.dequantize(torch.float32).to(device=w.device, dtype=w.dtype)


def clip_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned clip values of every activation quantizer."""
    out: list[nn.Parameter] = []
    for layer in quant_layers(model).values():
        out += [layer.act_quant.lower, layer.act_quant.upper]
    return out


def with_clip_group(
    groups: list[dict[str, Any]], model: nn.Module, clip_lr_scale: float
) -> list[dict[str, Any]]:
    """Optimizer groups with the clip values moved into a group of their own.

    The clip values learn at `clip_lr_scale` times the schedule's rate, without weight decay:
    each is one scalar per tensor, and at the weights' rate they would hardly move.
    """
    clips = clip_parameters(model)
    ids = {id(p) for p in clips}
    out: list[dict[str, Any]] = []
    for g in groups:
        params = [p for p in g["params"] if id(p) not in ids]
        if params:
            out.append({**g, "params": params})
    if clips:
        out.append(
            {"name": "clip", "params": clips, "lr_scale": clip_lr_scale, "weight_decay": 0.0}
        )
    return out


@torch.no_grad()
def calibrate_clip_values(
    model: nn.Module, batches: Iterable[Tensor]
) -> dict[str, tuple[float, float]]:
    """Set each layer's clip values to the MSE-best range of its inputs on `batches`.

    Inputs are gathered with activation quantization off, so every layer sees the
    full-precision activations (the clip values are learned from there during QAT).
    """
    layers = quant_layers(model)
    batches = list(batches)
    # Per layer: running min and max, and a strided sample of each batch's values (bounded
    # memory whatever the model's size) on which the range search measures its error.
    per_batch = max(1, MSE_SAMPLE // max(1, len(batches)))
    sample: dict[str, list[Tensor]] = {n: [] for n in layers}
    bounds: dict[str, tuple[float, float]] = {}

    def hook(name: str) -> Callable[..., None]:
        def fn(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach().float().flatten()
            lo, hi = float(x.min()), float(x.max())
            old = bounds.get(name, (lo, hi))
            bounds[name] = (min(lo, old[0]), max(hi, old[1]))
            sample[name].append(x[:: -(-x.numel() // per_batch)].cpu())

        return fn

    enabled = {n: m.act_quant.enabled for n, m in layers.items()}
    for m in layers.values():
        m.act_quant.enabled = False
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for idx in batches:
            model(idx)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ranges: dict[str, tuple[float, float]] = {}
    for name, layer in layers.items():
        layer.act_quant.enabled = enabled[name]
        if sample[name]:
            lo, hi = mse_clip_range(
                torch.cat(sample[name]), layer.act_quant.bits, bounds=bounds[name]
            )
            layer.act_quant.set_range(lo, hi)
            ranges[name] = (lo, hi)
    return ranges
