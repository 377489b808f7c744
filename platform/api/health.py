"""Node health in one vocabulary: what the health agent writes on a Node and the operator reads.

The agent (`carina health-agent`, a DaemonSet) runs checks on its node and writes the verdict
three ways: labels (so a scheduler can select on them), a node condition (so `kubectl describe
node` says why) and metrics. The operator keeps workers off WARN and EVICT nodes (a required
node affinity on every worker pod), taints EVICT nodes so nothing else lands there either,
moves a running gang off an EVICT node (SIGTERM, checkpoint, restart elsewhere, counted as
infrastructure) and removes the taint once the node passes again.
"""

from __future__ import annotations

from enum import StrEnum


class Health(StrEnum):
    """A node's verdict, worst first in `WORST_FIRST`."""

    PASS = "PASS"  # every check that could run passed
    WARN = "WARN"  # degraded: running work stays, no new worker lands here
    EVICT = "EVICT"  # broken: running workers are moved off, the node is tainted


WORST_FIRST = (Health.EVICT, Health.WARN, Health.PASS)

# Node labels the agent writes.
HEALTH_LABEL = "carina.dev/health"  # a Health value
HEALTH_CHECK_LABEL = "carina.dev/health-check"  # the first failing check's name ("" on PASS)
# Unix seconds of the node's last passing run of the invasive checks (an integer, so a pod can
# require a recent one with a node affinity `Gt`: the preflight gate of a large job).
FULL_PASS_LABEL = "carina.dev/health-full-pass"

# The node condition the agent writes (status True on PASS).
CONDITION_TYPE = "CarinaHealthy"
CONDITION_REASONS = {
    Health.PASS: "ChecksPassed",
    Health.WARN: "ChecksWarn",
    Health.EVICT: "ChecksEvict",
}

# Annotation anyone (the operator, on a straggler; a person) sets to ask the agent for a full
# check of the node at its next chance (an RFC 3339 time; the agent answers requests newer
# than its last full run).
CHECK_REQUESTED_ANNOTATION = "carina.dev/health-check-requested"

# The taint the operator puts on EVICT nodes (and removes once they pass again).
UNHEALTHY_TAINT_KEY = "carina.dev/unhealthy"
UNHEALTHY_TAINT = {"key": UNHEALTHY_TAINT_KEY, "value": Health.EVICT.value, "effect": "NoSchedule"}

# Workers never land on nodes with these verdicts (a node without the label is unchecked and
# allowed: a cluster without the agent works as before).
AVOIDED = (Health.WARN.value, Health.EVICT.value)


def node_health(labels: dict[str, str] | None) -> Health | None:
    """The verdict a Node's labels carry, or None for an unchecked node (or a value not ours)."""
    value = (labels or {}).get(HEALTH_LABEL)
    try:
        return Health(value) if value else None
    except ValueError:
        return None
