"""The catalog of metric names dashboards and alert rules may use: what Carina's code exports.

There is no second list here. Each component owns its names, as constants in one module:

- workers: `carina.workloads.metric_names`
- the operator: `carina.operators.runtime.metrics`
- the node health agent: `carina.operators.health.metrics`
- the control plane: `carina.platform.controlplane.metric_names`

This module imports the four (only tests may: carina.platform must not import the operator
or the training code) and asks each component's real prometheus-client registry for the type
of every metric, so it knows which series Prometheus stores for it: `x_total` for a counter,
`x_bucket`/`x_sum`/`x_count` for a histogram. `check_owner_lists` confirms that every metric a
component's registry holds is in its owner's list, so a metric added to the code but not to
the list fails. (A listed name may be missing from the registry built here: the fine-tune and
quantize workloads add their gauges to the worker's registry only when they run. Such a name
is known by its plain name only, so a dashboard cannot select a suffix it does not have.)

Names not made by Carina's code are listed in `EXTERNAL` with the program that exports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Series that Prometheus itself, or a standard exporter the chart's README asks for, provides.
EXTERNAL: dict[str, str] = {
    "up": "Prometheus, for every scrape target",
    "kube_node_status_allocatable": "kube-state-metrics",
    "kube_node_labels": "kube-state-metrics (--metric-labels-allowlist=nodes=[carina.dev/pool])",
    "kube_pod_container_resource_requests": "kube-state-metrics",
    "kube_pod_status_phase": "kube-state-metrics",
}

# series name suffixes Prometheus stores for each metric type (prometheus-client's exposition)
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


@dataclass(frozen=True)
class Metric:
    """One exported metric: its name as its owner writes it, type, help and component."""

    name: str
    type: str
    help: str
    component: str

    def series(self) -> tuple[str, ...]:
        """Every series name Prometheus stores for this metric."""
        base = self.name.removesuffix("_total") if self.type == "counter" else self.name
        return tuple(base + suffix for suffix in _SUFFIXES[self.type])


@dataclass(frozen=True)
class Component:
    """Where one component lists its names and how to reach its real registry."""

    name: str
    names_module: str
    registry: Callable[[], Any]


def _worker_registry() -> Any:
    from carina.workloads.runtime.telemetry import Telemetry

    return Telemetry(job="catalog", namespace="catalog", rank=0, total_steps=1, port=0).registry


def _control_plane_registry() -> Any:
    from carina.platform.controlplane.telemetry import REGISTRY

    return REGISTRY


def _operator_registry() -> Any:
    module = importlib.import_module("carina.operators.runtime.metrics")
    return module.REGISTRY


def _health_agent_registry() -> Any:
    module = importlib.import_module("carina.operators.health.metrics")
    return module.REGISTRY


COMPONENTS = (
    Component("worker", "carina.workloads.metric_names", _worker_registry),
    Component("operator", "carina.operators.runtime.metrics", _operator_registry),
    Component("health-agent", "carina.operators.health.metrics", _health_agent_registry),
    Component(
        "control-plane", "carina.platform.controlplane.metric_names", _control_plane_registry
    ),
)


class OwnerMissing(RuntimeError):
    """A component's names module is not importable (yet)."""


def owner_names(component: Component) -> tuple[str, ...]:
    """The names a component's own module lists (its `ALL`)."""
    try:
        module = importlib.import_module(component.names_module)
    except ModuleNotFoundError as exc:
        raise OwnerMissing(f"{component.names_module} is missing: {exc}") from exc
    names = getattr(module, "ALL", None)
    if names is None:
        raise OwnerMissing(f"{component.names_module} has no ALL tuple of metric names")
    return tuple(names)


def registry_metrics(component: Component) -> dict[str, Metric]:
    """The metrics a component's real registry exports, by their owner-style name."""
    out: dict[str, Metric] = {}
    for family in component.registry().collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        out[name] = Metric(name, family.type, family.documentation, component.name)
    return out


def _declared(metrics: Iterable[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def exported_metrics(*, require_all: bool = True) -> dict[str, Metric]:
    """Every metric Carina's code exports, by name; raises OwnerMissing unless require_all=False."""
    out: dict[str, Metric] = {}
    for component in COMPONENTS:
        try:
            names = owner_names(component)
        except OwnerMissing:
            if require_all:
                raise
            continue
        from_registry = registry_metrics(component)
        for name in names:
            # Listed but not in the registry built here (a workload-specific gauge): known by
            # its name, typed by the convention of its suffix.
            out[name] = from_registry.get(name) or Metric(
                name, "counter" if name.endswith("_total") else "unknown", "", component.name
            )
    return out


def series_names(*, require_all: bool = True) -> dict[str, str]:
    """Every series name a dashboard may select, mapped to who exports it."""
    out = dict(EXTERNAL.items())
    for metric in exported_metrics(require_all=require_all).values():
        for series in metric.series():
            out[series] = metric.component
    return out


def check_owner_lists() -> list[str]:
    """Metrics a component's registry holds that its owner's list lacks (empty when none)."""
    problems = []
    for component in COMPONENTS:
        listed = set(owner_names(component))
        for name in sorted(set(registry_metrics(component)) - listed):
            problems.append(f"{component.name}: {name} is registered but not listed")
    return problems


__all__ = [
    "COMPONENTS",
    "EXTERNAL",
    "Metric",
    "OwnerMissing",
    "check_owner_lists",
    "exported_metrics",
    "series_names",
]
