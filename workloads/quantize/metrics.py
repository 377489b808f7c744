"""The quantize workload's own gauges (names in `carina.workloads.metric_names`).

They live on the worker's registry (`Telemetry.registry`), next to the usual worker metrics:
`QuantizeMetrics(telemetry, WorkerContext())` registers all three.
"""

from __future__ import annotations

from prometheus_client import Gauge

from carina.workloads import metric_names as names
from carina.workloads.contract import WorkerContext
from carina.workloads.runtime.telemetry import Telemetry


class QuantizeMetrics:
    """The quantize workload's own gauges, on the worker's registry (names in metric_names)."""

    def __init__(self, telemetry: Telemetry, ctx: WorkerContext) -> None:
        self.labels = {"job": ctx.job, "namespace": ctx.namespace, "rank": str(ctx.rank)}
        reg = telemetry.registry
        self.kurtosis = Gauge(
            names.QUANTIZE_ACTIVATION_KURTOSIS,
            "Mean kurtosis of a linear layer's activations",
            names.QUANTIZE_LAYER_LABELS,
            registry=reg,
        )
        self.ratio = Gauge(
            names.QUANTIZE_CHANNEL_MAX_MEDIAN_RATIO,
            "Largest channel magnitude over the median channel's, per linear layer",
            names.QUANTIZE_LAYER_LABELS,
            registry=reg,
        )
        self.perplexity = Gauge(
            names.QUANTIZE_PERPLEXITY,
            "Held-out perplexity by simulated precision",
            names.QUANTIZE_PRECISION_LABELS,
            registry=reg,
        )

    def on_layers(self, stats: dict[str, dict[str, float]]) -> None:
        """Per-layer kurtosis and max/median channel ratio of inputs and outputs."""
        for layer, s in stats.items():
            for tensor in ("input", "output"):
                lab = {**self.labels, "layer": layer, "tensor": tensor}
                self.kurtosis.labels(**lab).set(s[f"{tensor}Kurtosis"])
                self.ratio.labels(**lab).set(s[f"{tensor}MaxMedianRatio"])

    def on_perplexity(self, perplexities: dict[str, float]) -> None:
        for precision, value in perplexities.items():
            self.perplexity.labels(**self.labels, precision=precision).set(value)
