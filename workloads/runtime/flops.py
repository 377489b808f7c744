"""Model FLOPs per token and MFU (PaLM, Chowdhery et al. 2022, appendix B).

Training FLOPs per token = 6·N + 12·L·d·T, where N counts the parameters that take part in a
matmul (everything but the token embedding lookup; the output head counts even when tied),
L layers, d = n_heads·d_head, T the sequence length. The second term is attention's QKᵀ and
AV products (forward + backward, without a causal-mask discount). DS-MoE trains densely, so
every expert counts. A batch of sequences of different lengths (fine-tuning pairs) costs the
sum over its sequences of n·(6·N + 12·L·d·n). MFU = achieved model FLOPs per second / the
accelerator's peak; where the peak is not known (CPUs, unlisted GPUs) MFU is unknown, not 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from carina.workloads.config import Architecture

# Dense bf16 peak FLOP/s per device (vendor datasheets, without sparsity).
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; PCIe parts are lower (756e12): set CARINA_PEAK_FLOPS there
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}


def flops_per_token(matmul_params: int, arch: Architecture, seq_len: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·d·T."""
    return 6.0 * matmul_params + 12.0 * arch.n_layers * arch.n_heads * arch.d_head * seq_len


def sequence_flops(matmul_params: int, arch: Architecture, lengths: Iterable[int]) -> float:
    """Training FLOPs of sequences of these lengths (padding excluded): Σ n·(6·N + 12·L·d·n)."""
    return sum(n * flops_per_token(matmul_params, arch, n) for n in lengths)


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one device: CARINA_PEAK_FLOPS if set, else by GPU name; None on CPU."""
    if os.environ.get("CARINA_PEAK_FLOPS"):
        return float(os.environ["CARINA_PEAK_FLOPS"])
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def mfu(
    tokens_per_second: float, flops_token: float, peak: float | None, devices: int
) -> float | None:
    """Model FLOPs utilization, 0-1; None when the peak is unknown."""
    if not peak:
        return None
    return tokens_per_second * flops_token / (peak * devices)
