"""Fake quantization: activations with learned clip values, weights per channel or per group.

Activations (Nrusimha et al. 2024, arXiv 2404.03605, after PACT, Choi et al. 2018): one
per-tensor asymmetric uniform quantizer per linear layer's input, with a learned lower clip
value `lower` and upper clip value `upper`:

    n = 2^b - 1,  s = n / (upper - lower)
    y = round((clamp(x, lower, upper) - lower) · s) / s + lower

Backward, as the paper's kernel (`pactplusmod.cu`, "PACT plus") computes it. Outside the
range, PACT's gradients: dy/d(upper) = 1 where x > upper, dy/d(lower) = 1 where x < lower,
dy/dx = 0 (both clip values map exactly onto the grid, levels 0 and n, so these are the exact
derivatives there). Inside, straight-through to x (dy/dx = 1) and, to the clip values, the
derivative of the rounding error with round's derivative taken as 1 (as LSQ does for its
step size): with u = (x - lower)·s and q = round(u), y = x + (q - u)·(upper - lower)/n, so

    dy/d(upper) = (q - u)/n,   dy/d(lower) = (u - q)/n            (inside the range)

Without this term only clipped elements move the clip values, and only outward-pulling
gradients from them decide the range; with it, the rounding error of every element does too.
Along a joint scaling or shift of (x, lower, upper), where round() does not change, these
gradients are the exact derivatives of the forward function.

Weights: asymmetric uniform, one (scale, zero point) per output channel or per group of
`group_size` consecutive input columns of each output row (0 = the whole row). Codes are
integers q in [0, 2^b - 1]; ŵ = (q - z) · s. Scales are rounded up to float16 before they are
used, so what the packed checkpoint stores (float16 scales) dequantizes to exactly the same ŵ,
and every weight in a group's [min, max] (which always includes 0) is within s/2 of ŵ.

Shapes: W (O, I) a linear weight, G = ceil(I / g) groups per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Smallest float16 normal: scales below it would lose precision when stored as float16.
MIN_SCALE = 2.0**-14
# Paper's example initial clip values (upper 4.0, lower -3.0) for training from scratch.
DEFAULT_UPPER, DEFAULT_LOWER = 4.0, -3.0
# Bits at or above which a tensor is left in floating point ("A16" means not quantized).
FLOAT_BITS = 16
# Values the clip-range search evaluates its error on (a strided sample beyond this).
MSE_SAMPLE = 1 << 20


# ---------------------------------------------------------------- activations


class _ClipFakeQuant(torch.autograd.Function):
    """Asymmetric uniform fake quantization: STE inside [lower, upper] plus the rounding-error
    term to the clip values, PACT outside (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, lower: Tensor, upper: Tensor, levels: int) -> Tensor:
        lo, hi = lower.to(x.dtype), upper.to(x.dtype)
        scale = levels / (hi - lo)
        y = torch.round((torch.clamp(x, lo, hi) - lo) * scale) / scale + lo
        ctx.save_for_backward(x, lo, hi)
        ctx.levels = levels
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        x, lo, hi = ctx.saved_tensors
        levels = ctx.levels
        below, above = x < lo, x > hi
        inside = ~(below | above)
        grad_x = grad * inside
        # Rounding error (q - u)/n of each element inside the range (0 outside it).
        xf, lof, hif = x.float(), lo.float(), hi.float()
        u = (torch.clamp(xf, lof, hif) - lof) * (levels / (hif - lof))
        err = (torch.round(u) - u) * inside / levels
        g = grad.float()
        grad_lower = (g * (below.float() - err)).sum().reshape(())
        grad_upper = (g * (above.float() + err)).sum().reshape(())
        return grad_x, grad_lower, grad_upper, None


def fake_quant_activation(x: Tensor, lower: Tensor, upper: Tensor, bits: int) -> Tensor:
    """x quantized to 2^bits levels between the clip values (see the module docstring)."""
    return _ClipFakeQuant.apply(x, lower, upper, 2**bits - 1)


class ActivationQuantizer(nn.Module):
    """A per-tensor quantizer with learned clip values; identity while `enabled` is False."""

    def __init__(
        self, bits: int, lower: float = DEFAULT_LOWER, upper: float = DEFAULT_UPPER
    ) -> None:
        super().__init__()
        self.bits = bits
        self.enabled = bits < FLOAT_BITS
        self.lower = nn.Parameter(torch.tensor(float(lower)))
        self.upper = nn.Parameter(torch.tensor(float(upper)))

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        return fake_quant_activation(x, self.lower, self.upper, self.bits)

    @torch.no_grad()
    def set_range(self, lower: float, upper: float) -> None:
        """Set the clip values (calibration); keeps upper > lower."""
        lower, upper = min(lower, 0.0), max(upper, 0.0)
        if upper - lower < 1e-6:
            upper = lower + 1e-6
        self.lower.fill_(lower)
        self.upper.fill_(upper)

    @torch.no_grad()
    def clamp_order(self) -> None:
        """After an optimizer step: keep lower < upper so the scale stays finite."""
        if float(self.upper) - float(self.lower) < 1e-4:
            self.upper.fill_(float(self.lower) + 1e-4)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, enabled={self.enabled}"


@torch.no_grad()
def mse_clip_range(
    x: Tensor,
    bits: int,
    grid: int = 40,
    min_shrink: float = 0.2,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Clip values for `x` that minimize the quantization MSE among shrunk min/max ranges.

    A 4-bit grid spread over an outlier's range leaves few levels for everything else, so
    shrinking the range (clipping the outliers) often lowers the error; this searches the
    shrink factor on a grid from `min_shrink` to 1. `bounds` gives the full data's min and max
    when `x` is only a sample of it.
    """
    x = x.detach().float().flatten()
    lo, hi = bounds if bounds is not None else (float(x.min()), float(x.max()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        return lo, hi + 1e-6
    if x.numel() > MSE_SAMPLE:  # the error is a mean: a strided sample estimates it well
        x = x[:: -(-x.numel() // MSE_SAMPLE)]
    best, best_err = (lo, hi), float("inf")
    levels = 2**bits - 1
    for k in range(grid + 1):
        f = min_shrink + (1.0 - min_shrink) * k / grid
        a, b = lo * f, hi * f
        s = levels / (b - a)
        y = torch.round((x.clamp(a, b) - a) * s) / s + a
        err = float((y - x).pow(2).mean())
        if err < best_err:
            best, best_err = (a, b), err
    return best


# ---------------------------------------------------------------- weights


@dataclass
class QuantizedWeight:
    """Integer codes of a linear weight with their per-group scales and zero points."""

    codes: Tensor  # (O, I) uint8, values in [0, 2^bits - 1]
    scales: Tensor  # (O, G) float16
    zeros: Tensor  # (O, G) uint8
    bits: int
    group_size: int  # columns per group; equals I for per-channel

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """ŵ = (q - z) · s, (O, I)."""
        g = self.group_size
        scales = self.scales.to(dtype).repeat_interleave(g, dim=1)[:, : self.codes.shape[1]]
        zeros = self.zeros.to(dtype).repeat_interleave(g, dim=1)[:, : self.codes.shape[1]]
        return (self.codes.to(dtype) - zeros) * scales


def effective_group_size(in_features: int, group_size: int) -> int:
    """Columns per group: `group_size`, or the whole row when it is 0 or wider than the row."""
    return in_features if group_size <= 0 or group_size >= in_features else group_size


def weight_qparams(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Scale (float16-representable, float32) and zero point of each row of w (R, C)."""
    levels = 2**bits - 1
    lo = w.min(dim=1).values.clamp(max=0.0)
    hi = w.max(dim=1).values.clamp(min=0.0)
    exact = ((hi - lo) / levels).clamp(min=MIN_SCALE)
    # Round the scale UP to float16 so the grid still spans [lo, hi]: error stays <= s/2.
    s16 = exact.half()
    s16 = torch.where(s16.float() < exact, torch.nextafter(s16, torch.full_like(s16, 1e4)), s16)
    scale = s16.float()
    zero = torch.clamp(torch.round(-lo / scale), 0, levels)
    return scale, zero


def quantize_with(w: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    """Codes of w (R, C) on the grid of per-row scale and zero point (R,)."""
    q = torch.round(w / scale[:, None]) + zero[:, None]
    return torch.clamp(q, 0, 2**bits - 1)


def _grouped(w: Tensor, g: int) -> Tensor:
    """(O, I) -> (O·G, g) rows of one group each; the last group is zero-padded."""
    n_out, n_in = w.shape
    pad = (-n_in) % g
    if pad:
        # Zero padding never changes a group's range: every range includes 0 anyway.
        w = F.pad(w, (0, pad))
    return w.reshape(n_out * ((n_in + pad) // g), g)


def quantize_weight_rtn(w: Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Round-to-nearest quantization of w (O, I), asymmetric, per group."""
    n_out, n_in = w.shape
    g = effective_group_size(n_in, group_size)
    rows = _grouped(w.detach().float(), g)  # (O·G, g)
    scale, zero = weight_qparams(rows, bits)
    codes = quantize_with(rows, scale, zero, bits).reshape(n_out, -1)[:, :n_in]
    return QuantizedWeight(
        codes=codes.to(torch.uint8),
        scales=scale.reshape(n_out, -1).half(),
        zeros=zero.reshape(n_out, -1).to(torch.uint8),
        bits=bits,
        group_size=g,
    )


def fake_quant_weight(w: Tensor, bits: int, group_size: int) -> Tensor:
    """ŵ of RTN quantization, with a straight-through gradient to w."""
    deq = quantize_weight_rtn(w, bits, group_size).dequantize(w.dtype)
    return w + (deq - w).detach()


# ---------------------------------------------------------------- the quantized linear layer


class QuantLinear(nn.Linear):
    """nn.Linear whose input goes through an ActivationQuantizer and whose weight may be fixed
    to dequantized codes. State-dict keys of the plain layer are kept (plus `act_quant.*`)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, activation_bits: int
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.act_quant = ActivationQuantizer(activation_bits)
        # Set by weight PTQ: the dequantized weight used instead of `weight` when quantized.
        self.register_buffer("weight_q", None, persistent=False)
        self.use_quantized_weight = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation_bits: int) -> QuantLinear:
        """A QuantLinear sharing `linear`'s parameters."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = linear.in_features, linear.out_features
        q.weight = linear.weight
        q.bias = linear.bias
        q.act_quant = ActivationQuantizer(activation_bits).to(linear.weight.device)
        q.register_buffer("weight_q", None, persistent=False)
        q.use_quantized_weight = False
        return q

    def clear_quantized_weight(self) -> None:
        """Forget the weight PTQ set: the layer runs its floating-point weight again."""
        self._buffers["weight_q"] = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_quant(x)
        wq = self.weight_q
        w = wq if self.use_quantized_weight and isinstance(wq, Tensor) else self.weight
        return F.linear(x, w, self.bias)
