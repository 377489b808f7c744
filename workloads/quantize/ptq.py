"""Weight post-training quantization of a whole model: round-to-nearest or GPTQ.

GPTQ runs block by block, as in the paper's reference code: the Hessians of block k's layers
come from calibration inputs that went through blocks 0..k-1 already quantized, so each block
compensates the errors of the ones before it. A layer's Hessian is built from the input it
multiplies at inference, i.e. after its activation quantizer when activations are quantized.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from carina.workloads.models.fake_quant import QuantizedWeight, quantize_weight_rtn
from carina.workloads.models.quant_layers import quant_layers, set_quantized_weights
from carina.workloads.quantize.gptq import HessianAccumulator, gptq_quantize


def _block_of(name: str) -> int:
    return int(name.split(".")[1])  # "blocks.<k>.attn.wq"


@torch.no_grad()
def quantize_model_weights(
    model: nn.Module,
    method: str,
    bits: int,
    group_size: int,
    calibration: Sequence[Tensor],
    quantize_activations: bool,
) -> dict[str, QuantizedWeight]:
    """Quantize every quantized layer's weight; the model then runs them when asked.

    Returns the codes per layer. `calibration` is a list of (B, T) token batches (GPTQ only).
    """
    layers = quant_layers(model)
    qweights: dict[str, QuantizedWeight] = {}
    if method == "rtn":
        qweights = {n: quantize_weight_rtn(m.weight, bits, group_size) for n, m in layers.items()}
        set_quantized_weights(model, qweights)
        return qweights
    if method != "gptq":
        raise ValueError(f"unknown weight PTQ method {method!r}")
    was_training = model.training
    model.eval()
    for layer in layers.values():
        # Layers without GPTQ codes yet run in full precision, whatever an earlier PTQ left.
        layer.clear_quantized_weight()
        layer.use_quantized_weight = True
        layer.act_quant.enabled = quantize_activations and layer.act_quant.bits < 16
    for block in sorted({_block_of(n) for n in layers}):
        names = [n for n in layers if _block_of(n) == block]
        hessians = {n: HessianAccumulator(layers[n].in_features) for n in names}
        handles = [
            layers[n].act_quant.register_forward_hook(
                lambda _mod, _inp, out, h=hessians[n]: h.add(out)
            )
            for n in names
        ]
        try:
            for idx in calibration:
                model(idx)
        finally:
            for h in handles:
                h.remove()
        for n in names:
            qweights[n] = gptq_quantize(layers[n].weight, hessians[n].H, bits, group_size)
        set_quantized_weights(model, {n: qweights[n] for n in names})
    model.train(was_training)
    return qweights
