"""Every Prometheus metric the node health agent exports, by name (its own registry and port).

The result and state gauges are one-hot: for each check every possible result has a series,
1 for the current one and 0 for the others, so a query never finds a stale 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge

from carina.operators.health.checks import CheckResult, Outcome
from carina.platform.api.health import WORST_FIRST, Health

CHECK_RESULT = "carina_node_health_check_result"  # gauge {node, check, result}: 1 = current
STATE = "carina_node_health_state"  # gauge {node, state}: 1 for the node's verdict
CHECK_SECONDS = "carina_node_health_check_seconds"  # gauge {check}: the last run's duration

ALL = (CHECK_RESULT, STATE, CHECK_SECONDS)

REGISTRY = CollectorRegistry(auto_describe=True)

check_result = Gauge(
    CHECK_RESULT,
    "Current result of each health check (1) among PASS, WARN, EVICT and UNSUPPORTED (0)",
    ["node", "check", "result"],
    registry=REGISTRY,
)
state = Gauge(
    STATE,
    "The node's health verdict (1) among PASS, WARN and EVICT (0)",
    ["node", "state"],
    registry=REGISTRY,
)
check_seconds = Gauge(
    CHECK_SECONDS, "Seconds the last run of each health check took", ["check"], registry=REGISTRY
)


_reported: set[tuple[str, str]] = set()  # (node, check) with series in check_result


def record(node: str, health: Health, results: Sequence[CheckResult]) -> None:
    """Set the gauges to a round's results and verdict (a check gone since, e.g. a fault
    drill's extra name, loses its series)."""
    current = {(node, r.check) for r in results}
    for gone_node, gone_check in _reported - current:
        for outcome in Outcome:
            check_result.remove(gone_node, gone_check, outcome.value)
    _reported.clear()
    _reported.update(current)
    for result in results:
        for outcome in Outcome:
            check_result.labels(node, result.check, outcome.value).set(
                1.0 if outcome == result.outcome else 0.0
            )
    for value in WORST_FIRST:
        state.labels(node, value.value).set(1.0 if value == health else 0.0)
