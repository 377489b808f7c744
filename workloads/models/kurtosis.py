"""Kurtosis regularization of linear layers' outputs, and activation statistics.

Kurtosis of a layer's output y (B, T, C) over the hidden dimension, per token, then averaged
over tokens (Nrusimha et al. 2024, arXiv 2404.03605, §3; the exact normalization of the paper
is unverified, see notes/techniques.md §3):

    Kurt(y_t) = mean_c(((y_tc - μ_t) / σ_t)^4)          (population moments; 3 for a Gaussian)
    L = CE + λ · mean over layers and tokens of Kurt(y_t)

A heavy-tailed row (a few outlier channels) has a large kurtosis, so the penalty pushes layers
away from writing outlier channels, which is what a 4-bit per-tensor activation grid cannot
represent. The penalty is computed by forward hooks during the training forward itself (no
second pass): each hook reduces its layer's output to one scalar that keeps its graph.

`ActivationStats` measures, without gradients, each layer's input and output kurtosis and the
max/median channel ratio: max over channels of a channel's largest |x| divided by the median
over channels of the same (≈ 1-3 for well-spread activations, 10-100+ with outlier channels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

EPS = 1e-8


def kurtosis(y: Tensor, dim: int = -1) -> Tensor:
    """Kurtosis E[((y - μ)/σ)^4] along `dim` (population moments), one value per row."""
    y = y.float()
    c = y - y.mean(dim=dim, keepdim=True)
    var = c.pow(2).mean(dim=dim)
    return c.pow(4).mean(dim=dim) / (var.pow(2) + EPS)


def channel_absmax(x: Tensor) -> Tensor:
    """Largest |x| of each channel (last dim) over every other dim: (C,)."""
    return x.detach().float().abs().flatten(0, -2).amax(dim=0)


def max_median_ratio(absmax: Tensor) -> float:
    """max_c m_c / median_c m_c of per-channel magnitudes m (C,)."""
    return float(absmax.max() / absmax.median().clamp(min=EPS))


def weight_kurtosis(w: Tensor) -> float:
    """Mean over output rows of the kurtosis along the input dimension (the group direction)."""
    return float(kurtosis(w.detach(), dim=1).mean())


class OutputKurtosis:
    """Hooks that compute each layer's mean output kurtosis during the forward pass.

    Use as a context manager around the training forward; `loss()` is the mean over the layers
    that ran, with its graph. While `record` is set, the hooks also keep each layer's detached
    statistics of that forward in `recorded` (metrics on logging steps only: they cost a sync).
    """

    def __init__(self, layers: Mapping[str, nn.Module]) -> None:
        self.layers = dict(layers)
        self._values: dict[str, Tensor] = {}
        self.record = False
        self.recorded: dict[str, dict[str, float]] = {}
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            k = kurtosis(output).mean()
            self._values[name] = k
            if self.record:
                with torch.no_grad():
                    x = inputs[0]
                    self.recorded[name] = {
                        "inputKurtosis": float(kurtosis(x).mean()),
                        "outputKurtosis": float(k.detach()),
                        "inputMaxMedianRatio": max_median_ratio(channel_absmax(x)),
                        "outputMaxMedianRatio": max_median_ratio(channel_absmax(output)),
                    }

        return hook

    def __enter__(self) -> OutputKurtosis:
        self._values = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def loss(self) -> Tensor:
        """Mean kurtosis over layers and tokens of the forward just run (differentiable)."""
        if not self._values:
            raise RuntimeError("no layer ran inside the OutputKurtosis context")
        return torch.stack(list(self._values.values())).mean()


@dataclass
class LayerStats:
    """Activation statistics of one linear layer accumulated over batches."""

    input_kurtosis: list[float] = field(default_factory=list)
    output_kurtosis: list[float] = field(default_factory=list)
    input_absmax: Tensor | None = None
    output_absmax: Tensor | None = None

    def summary(self) -> dict[str, float]:
        """Means over batches and max/median ratios over the whole run."""
        assert self.input_absmax is not None
        assert self.output_absmax is not None
        return {
            "inputKurtosis": sum(self.input_kurtosis) / len(self.input_kurtosis),
            "outputKurtosis": sum(self.output_kurtosis) / len(self.output_kurtosis),
            "inputMaxMedianRatio": max_median_ratio(self.input_absmax),
            "outputMaxMedianRatio": max_median_ratio(self.output_absmax),
        }


class ActivationStats:
    """No-grad hooks recording kurtosis and channel magnitudes of layers' inputs and outputs.

    Inputs are taken as the layer receives them, before any activation fake quantization.
    """

    def __init__(self, layers: Mapping[str, nn.Module]) -> None:
        self.layers = dict(layers)
        self.stats: dict[str, LayerStats] = {n: LayerStats() for n in self.layers}

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            with torch.no_grad():
                s = self.stats[name]
                x = inputs[0]
                s.input_kurtosis.append(float(kurtosis(x).mean()))
                s.output_kurtosis.append(float(kurtosis(output).mean()))
                xi, yo = channel_absmax(x), channel_absmax(output)
                s.input_absmax = xi if s.input_absmax is None else torch.maximum(s.input_absmax, xi)
                s.output_absmax = (
                    yo if s.output_absmax is None else torch.maximum(s.output_absmax, yo)
                )

        return hook

    @contextmanager
    def recording(self) -> Iterator[ActivationStats]:
        """Record while the context is open."""
        handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per layer: mean input/output kurtosis and max/median channel ratios."""
        return {n: s.summary() for n, s in self.stats.items() if s.input_kurtosis}
