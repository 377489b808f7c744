"""Weight PTQ by GPTQ (Frantar et al. 2022, arXiv 2210.17323), with the Hessian from calibration.

For a linear layer W (O, I) and calibration inputs X (N, I), GPTQ minimizes ||XWᵀ - XŴᵀ||²
column by column: it quantizes column j, then spreads the error onto the not yet quantized
columns through the inverse Hessian H⁻¹ (H = 2/N · XᵀX), so later columns compensate:

    err = (w_j - q_j) / [H⁻¹]_jj ;   W[:, j:] -= err · [H⁻¹]_{j, j:}          (Alg. 1)

H⁻¹ is used through its upper Cholesky factor (numerically stable; rows of it are exactly the
updates of Alg. 1). Columns are processed in blocks of B: inside a block updates are applied
at once per column, and the block's accumulated error reaches the columns right of the block
in one matmul (the "lazy batch" update, §3 Step 2). Damping adds λ·mean(diag H) to the
diagonal (λ = 0.01). Inputs that never vary (diag H = 0) get weight 0 and H_jj = 1.

With groups, a group's scale and zero point are fixed from the (already error-updated) weights
when its first column is reached; the block size is the group size so each group starts a block.
Per channel (group size 0), the row's grid comes from the whole row before the first column,
as in the reference code (`quantizer.find_params(W)` ahead of the loop): a block holds only
`block_size` columns, and a grid taken from the first block would clip every larger weight
right of it. With H = I (no error to spread) GPTQ then equals round-to-nearest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from carina.workloads.models.fake_quant import (
    QuantizedWeight,
    effective_group_size,
    quantize_with,
    weight_qparams,
)

DAMP = 0.01
DEFAULT_BLOCK = 128


class HessianAccumulator:
    """Running H = 2/N · Σ x xᵀ over calibration inputs of one layer (float64 for stability).

    H lives on the inputs' device: activations never leave the GPU they were computed on.
    """

    def __init__(self, in_features: int) -> None:
        self.H = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.n = 0

    def add(self, x: Tensor) -> None:
        """Add a batch of inputs (..., I)."""
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        self.H = self.H.to(x.device)
        m = x.shape[0]
        self.H *= self.n / (self.n + m)
        self.n += m
        x = x * (2.0 / self.n) ** 0.5
        self.H += x.T @ x


def gptq_quantize(
    w: Tensor,
    H: Tensor,
    bits: int,
    group_size: int,
    damp: float = DAMP,
    block_size: int = DEFAULT_BLOCK,
) -> QuantizedWeight:
    """GPTQ codes of w (O, I) given the input Hessian H (I, I), computed on H's device.

    The codes, scales and zero points come back on w's device.
    """
    device = H.device
    W = w.detach().to(device=device, dtype=torch.float64).clone()
    n_out, n_in = W.shape
    H = H.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n_in, dtype=H.dtype, device=device)
    # Upper Cholesky factor of H⁻¹: row j holds the update coefficients of column j (Alg. 1).
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    g = effective_group_size(n_in, group_size)
    block = g if group_size > 0 else min(block_size, n_in)
    n_groups = -(-n_in // g)
    codes = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    scales = torch.zeros(n_out, n_groups, dtype=torch.float64, device=device)
    zeros = torch.zeros(n_out, n_groups, dtype=torch.float64, device=device)
    scale = zero = torch.zeros(n_out, dtype=torch.float64, device=device)
    per_channel = g == n_in
    if per_channel:  # one grid per row, from all of its columns
        scale, zero = weight_qparams(W.float(), bits)
        scale, zero = scale.double(), zero.double()
        scales[:, 0], zeros[:, 0] = scale, zero

    for i1 in range(0, n_in, block):
        i2 = min(i1 + block, n_in)
        W1 = W[:, i1:i2].clone()  # (n_out, b)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if not per_channel and col % g == 0:
                # The group's grid from its weights as updated so far (all inside this block).
                scale, zero = weight_qparams(W1[:, i : i + g].float(), bits)
                scale, zero = scale.double(), zero.double()
                scales[:, col // g], zeros[:, col // g] = scale, zero
            w_col = W1[:, i]
            q = quantize_with(w_col[:, None], scale, zero, bits)[:, 0]
            codes[:, col] = q
            err = (w_col - (q - zero) * scale) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        # Lazy batch update: the block's errors reach every later column in one matmul.
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    return QuantizedWeight(
        codes=codes.to(device=w.device, dtype=torch.uint8),
        scales=scales.to(device=w.device, dtype=torch.float16),
        zeros=zeros.to(device=w.device, dtype=torch.uint8),
        bits=bits,
        group_size=g,
    )


def reconstruction_error(w: Tensor, w_hat: Tensor, x: Tensor) -> float:
    """Mean squared output error ||x wᵀ - x ŵᵀ||² / numel on inputs x (N, I)."""
    return float((x @ (w - w_hat).T).pow(2).mean())
