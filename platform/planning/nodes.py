"""What planning needs of a Node: its labels, what it offers, and whether workers may land there.

The operator builds these from Node objects (`node_info`); placement (topology domains, the
capacity admission sees) and node health (which gangs must move) read nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from carina.platform.api.health import (
    AVOIDED,
    CONDITION_TYPE,
    FULL_PASS_LABEL,
    HEALTH_CHECK_LABEL,
    UNHEALTHY_TAINT,
    UNHEALTHY_TAINT_KEY,
    Health,
    node_health,
)
from carina.platform.api.quantity import parse_quantity
from carina.platform.api.queues import GPU


@dataclass(frozen=True)
class NodeInfo:
    """One node as last seen."""

    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Allocatable resources in base units (cores, bytes, devices).
    allocatable: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    taints: tuple[Mapping[str, Any], ...] = ()
    unschedulable: bool = False  # cordoned
    ready: bool = True
    # The health agent's words (its CarinaHealthy condition's message), "" when it said none.
    health_message: str = ""

    @property
    def health(self) -> Health | None:
        """The health agent's verdict (None: never checked)."""
        return node_health(dict(self.labels))

    @property
    def evict(self) -> bool:
        """Broken: gangs with a worker here move elsewhere."""
        return self.health == Health.EVICT

    @property
    def health_reason(self) -> str:
        """What the health agent found, in a sentence for a job's restart message."""
        check = self.labels.get(HEALTH_CHECK_LABEL) or "a health check"
        words = self.health_message or f"{check} failed"
        return f"node {self.name} is {self.health.value if self.health else 'unchecked'}: {words}"

    @property
    def usable(self) -> bool:
        """A new worker may land here: ready, not cordoned, not WARN or EVICT, not tainted so."""
        if not self.ready or self.unschedulable:
            return False
        if self.health is not None and self.health.value in AVOIDED:
            return False
        return not any(t.get("key") == UNHEALTHY_TAINT_KEY for t in self.taints)


def _amounts(resources: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in resources.items():
        try:
            out[name] = float(parse_quantity(str(value)))
        except ValueError:
            continue
    return out


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    """A NodeInfo from a Node (a dict as the API returns it)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = next(
        (
            c.get("status") == "True"
            for c in status.get("conditions") or []
            if c.get("type") == "Ready"
        ),
        True,  # kwok and a freshly registered node may carry no Ready condition yet
    )
    health: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == CONDITION_TYPE), {}
    )
    return NodeInfo(
        name=meta.get("name", ""),
        labels=MappingProxyType(dict(meta.get("labels") or {})),
        allocatable=MappingProxyType(_amounts(status.get("allocatable") or {})),
        taints=tuple(MappingProxyType(dict(t)) for t in spec.get("taints") or ()),
        unschedulable=bool(spec.get("unschedulable")),
        ready=ready,
        health_message=str(health.get("message") or ""),
    )


def taints_wanted(node: NodeInfo) -> list[dict[str, Any]] | None:
    """The node's taints with the unhealthy taint added (EVICT) or removed (PASS, or the
    agent's verdict taken off); None when they are right as they are.

    A WARN node keeps what it has: it is not broken enough to taint, nor passing yet.
    """
    has = any(t.get("key") == UNHEALTHY_TAINT_KEY for t in node.taints)
    others = [dict(t) for t in node.taints if t.get("key") != UNHEALTHY_TAINT_KEY]
    if node.health == Health.EVICT and not has:
        return [*others, dict(UNHEALTHY_TAINT)]
    if node.health in (Health.PASS, None) and has:
        return others
    return None


def full_pass_time(node: NodeInfo) -> int | None:
    """Unix seconds of the node's last passing full check, or None."""
    try:
        return int(node.labels.get(FULL_PASS_LABEL, ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class Preflight:
    """Where a preflight-gated gang stands: nodes ready for it, and nodes to check first."""

    ready: tuple[str, ...]  # usable nodes of its pool whose full checks passed since `after`
    to_check: tuple[str, ...]  # usable nodes of its pool to ask the health agent to check
    needed: int  # nodes the gang needs

    @property
    def clear(self) -> bool:
        return len(self.ready) >= self.needed

    def message(self, after: int) -> str:
        """Why the gang waits, in a sentence."""
        return (
            f"preflight: {self.needed} node(s) must have passed the full health checks since"
            f" {after} (unix seconds); {len(self.ready)} have; asked the health agent to"
            f" check {len(self.to_check)} more"
        )


def preflight(
    nodes: Iterable[NodeInfo], selector: Mapping[str, str], needed: int, after: int
) -> Preflight:
    """Which usable nodes matching `selector` passed a full check after `after`, and which
    others to have checked (enough to make up the gang, least recently checked first).

    One worker per node: a GPU gang's workers each take a whole node on both profiles.
    """
    pool = [n for n in nodes if n.usable and all(n.labels.get(k) == v for k, v in selector.items())]
    ready = sorted(n.name for n in pool if (full_pass_time(n) or 0) > after)
    rest = sorted(
        (n for n in pool if n.name not in ready), key=lambda n: (full_pass_time(n) or 0, n.name)
    )
    missing = max(0, needed - len(ready))
    return Preflight(tuple(ready), tuple(n.name for n in rest[:missing]), needed)


def healthy_capacity(nodes: Iterable[NodeInfo]) -> dict[str, float]:
    """The GPUs of the usable nodes, as admission caps what all queues hold together.

    Empty (no cap) when no node offers a GPU: a cluster without GPU nodes in view leaves
    admission to the quotas alone.
    """
    listed = list(nodes)
    if not any(n.allocatable.get(GPU, 0.0) > 0 for n in listed):
        return {}
    return {GPU: sum(n.allocatable.get(GPU, 0.0) for n in listed if n.usable)}
