"""Topology placement: which domain of a topology level a gang's workers are pinned to.

A topology level is a node label (`carina.dev/scalable-unit`, `carina.dev/rack`); a domain is
one of its values, the nodes that share it. A gang that asks for a level (`spec.topology`, or
its cluster profile's default) gets one domain where every one of its workers fits now: pods
cannot be split across nodes, so each node counts the whole workers its free resources take
(`pods_fitting`), and a domain has room when those add up to the replicas.

Of the domains with room the gang takes the one with the fewest free GPUs (ties by name):
best fit, so the big domains stay whole for the big gangs. A restarted gang keeps its domain
while that still has room (its own pods count as free), so its restart does not scatter it.

What is free is what the nodes offer less what Carina's own workers hold: the operator sees
its workers, not other controllers' pods (GPU nodes are tainted so only GPU workers land
there). Quota, the share each team may use, is the admission engine's (`queueing`); this
module only answers whether one domain has room for the whole gang.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carina.platform.api.quantity import parse_quantity
from carina.platform.api.reasons import Reason
from carina.platform.api.types import TopologyMode, TopologyPlacement, TrainingJob
from carina.platform.planning.engine import JobAdmission
from carina.platform.planning.nodes import NodeInfo
from carina.platform.planning.profiles import (
    GPU_RESOURCE,
    GPU_TOLERATION,
    SCALABLE_UNIT_LABEL,
    profile_for,
    topology_request,
)

BLOCK_LABEL = "carina.dev/block"  # a group of scalable units on one spine (Blue Vela)
RACK_LABEL = "carina.dev/rack"  # the nodes behind one top-of-rack switch (Vela)
HOSTNAME_LABEL = "kubernetes.io/hostname"  # one node
# The operator's topology levels unless configured: outermost first.
DEFAULT_LEVELS = (BLOCK_LABEL, SCALABLE_UNIT_LABEL, RACK_LABEL, HOSTNAME_LABEL)

PODS = "pods"
# Quantities are parsed to floats: 0.1 + 0.2 of a core must still fit in 0.3.
_EPSILON = 1e-9


def pod_requests(job: TrainingJob) -> dict[str, float]:
    """What one worker pod requests (the renderer's requests, in base units, plus one pod).

    ValueError for a quantity that cannot be counted (the API refuses such a spec).
    """
    res = job.spec.resources
    out = {
        "cpu": parse_quantity(str(res.cpu)),
        "memory": parse_quantity(str(res.memory)),
        PODS: 1.0,
    }
    for name, amount in profile_for(job.spec.cluster).extra_resources.items():
        out[name] = parse_quantity(amount)
    if res.gpus:
        out[GPU_RESOURCE] = float(res.gpus)
    return out


def _node_selector(job: TrainingJob) -> dict[str, str]:
    """The labels a worker's node must carry: the profile's pool, and the template's."""
    selector = dict(profile_for(job.spec.cluster).node_selector)
    template = job.spec.template
    if template is not None and template.spec is not None and template.spec.node_selector:
        selector |= template.spec.node_selector
    return selector


def _tolerations(job: TrainingJob) -> list[Mapping[str, Any]]:
    """The scheduling taints a worker tolerates (as `render` gives them)."""
    out: list[Mapping[str, Any]] = list(profile_for(job.spec.cluster).tolerations)
    if job.spec.resources.gpus:
        out.append(GPU_TOLERATION)
    template = job.spec.template
    if template is not None and template.spec is not None:
        out += [t.to_wire() for t in template.spec.tolerations or ()]
    return out


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    """Kubernetes' rule: a toleration matches the taint's effect (or all), key and value."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        if t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def eligible(
    node: NodeInfo, selector: Mapping[str, str], tolerations: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a new worker may land on `node`: usable, selected, and every taint that keeps
    pods off tolerated."""
    if not node.usable or any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    return all(
        _tolerated(t, tolerations)
        for t in node.taints
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )


@dataclass(frozen=True)
class PodLoad:
    """One worker pod of another gang: what it requests, and where it is or will be."""

    requests: Mapping[str, float]
    node: str | None = None  # bound to this node; None: not scheduled yet
    # Where an unscheduled pod will land: its gang's domain (None: anywhere, not counted).
    pinned: TopologyPlacement | None = None


def pods_fitting(free: Mapping[str, float], requests: Mapping[str, float]) -> int:
    """How many pods of `requests` the free resources take (a resource not offered: none)."""
    counts = [
        math.floor((free.get(name, 0.0) + _EPSILON) / amount)
        for name, amount in requests.items()
        if amount > 0
    ]
    return max(0, min(counts, default=0))


def free_by_node(
    nodes: Iterable[NodeInfo], loads: Iterable[PodLoad]
) -> dict[str, dict[str, float]]:
    """What each node has left once the loads are placed.

    A scheduled pod takes from its node. An unscheduled pod pinned to a domain will take from
    one of that domain's nodes: it is counted on the node with the most room for it (ties by
    name), as the scheduler's spreading would put it; one that fits nowhere is left out.
    """
    by_name = {n.name: n for n in nodes}
    free = {n.name: dict(n.allocatable) for n in by_name.values()}
    waiting: list[PodLoad] = []
    for load in loads:
        if load.node is None:
            if load.pinned is not None:
                waiting.append(load)
        elif load.node in free:
            _take(free[load.node], load.requests)
    for load in waiting:
        assert load.pinned is not None
        level, domain = load.pinned.level, load.pinned.domain
        candidates = [
            (pods_fitting(free[n.name], load.requests), n.name)
            for n in by_name.values()
            if n.labels.get(level) == domain
        ]
        room, name = min(candidates, key=lambda c: (-c[0], c[1]), default=(0, ""))
        if room > 0:
            _take(free[name], load.requests)
    return free


def _take(free: dict[str, float], requests: Mapping[str, float]) -> None:
    for name, amount in requests.items():
        free[name] = free.get(name, 0.0) - amount


@dataclass(frozen=True)
class Domain:
    """One domain of a level, as the gang sees it."""

    name: str
    room: int  # the gang's workers its nodes take now
    free_gpus: float  # on the nodes the gang may use


def domains(
    nodes: Iterable[NodeInfo],
    free: Mapping[str, Mapping[str, float]],
    level: str,
    requests: Mapping[str, float],
    selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> dict[str, Domain]:
    """Every domain of `level` among the nodes the gang may use, with its room; by name."""
    room: dict[str, int] = {}
    gpus: dict[str, float] = {}
    for node in nodes:
        value = node.labels.get(level)
        if value is None or not eligible(node, selector, tolerations):
            continue
        left = free.get(node.name, node.allocatable)
        room[value] = room.get(value, 0) + pods_fitting(left, requests)
        gpus[value] = gpus.get(value, 0.0) + max(0.0, left.get(GPU_RESOURCE, 0.0))
    return {d: Domain(d, room[d], gpus[d]) for d in sorted(room)}


def choose(
    candidates: Mapping[str, Domain], replicas: int, previous: str | None = None
) -> Domain | None:
    """The domain for a gang of `replicas`: the previous one while it has room, else the one
    with room and the fewest free GPUs (ties by name); None when none has room."""
    fitting = [d for d in candidates.values() if d.room >= replicas]
    kept = next((d for d in fitting if d.name == previous), None)
    if kept is not None:
        return kept
    return min(fitting, key=lambda d: (d.free_gpus, d.name), default=None)


@dataclass(frozen=True)
class PlacementDecision:
    """Where the gang goes, or why it waits."""

    # The domain to pin the workers to; None: unpinned (no topology, or Preferred without room).
    placement: TopologyPlacement | None = None
    mode: str | None = None  # TopologyMode of the request
    # Why the gang waits (only a Required request waits); None: it may start.
    waiting: str | None = None
    reason: Reason | None = None
    # No domain could hold the gang even with no other worker anywhere (or an unknown level).
    never_fits: bool = False


UNPINNED = PlacementDecision()


def admit(admission: JobAdmission, decision: PlacementDecision) -> JobAdmission:
    """The queue's admission and the placement together: a gang the queue admits still waits
    while no domain has room for it (a gang the queue holds back waits for the queue first)."""
    if not admission.admitted or decision.waiting is None:
        return admission
    return JobAdmission(
        False, decision.waiting, never_fits=decision.never_fits, reason=decision.reason
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_gang(job: TrainingJob) -> str:
    """'4 workers x 8 GPUs', or '2 workers x 4 CPU, 16Gi memory' for a gang without GPUs."""
    res = job.spec.resources
    each = _plural(res.gpus, "GPU") if res.gpus else f"{res.cpu} CPU, {res.memory} memory"
    return f"{_plural(job.spec.replicas, 'worker')} x {each}"


def _most(found: Mapping[str, Domain]) -> Domain:
    """The domain with the most room (ties by name)."""
    return min(found.values(), key=lambda d: (-d.room, d.name))


def place(
    job: TrainingJob,
    nodes: Sequence[NodeInfo],
    loads: Iterable[PodLoad],
    levels: Sequence[str],
) -> PlacementDecision:
    """Where the gang's workers go: see the module docstring.

    `loads` are the other gangs' live workers (the gang's own count as free: a restart may
    reuse their room); `levels` the topology levels the operator is configured with. A level
    not among them: an explicit request waits (the API server cannot know the operator's
    configuration), a profile's default is dropped (the cluster has no such level).
    """
    request = topology_request(job)
    if request is None:
        return UNPINNED
    level, mode = request.level, str(request.mode)
    if level not in levels:
        if job.spec.topology is None:
            return UNPINNED
        known = ", ".join(levels) or "none"
        return PlacementDecision(
            mode=mode,
            waiting=f"spec.topology.level {level} is not a topology level of this operator"
            f" (it knows: {known})",
            reason=Reason.UNKNOWN_TOPOLOGY_LEVEL,
            never_fits=True,
        )
    try:
        requests = pod_requests(job)
    except ValueError:
        return UNPINNED  # the API refuses such a spec; the queue's admission says why
    selector, tolerations = _node_selector(job), _tolerations(job)
    free = free_by_node(nodes, loads)
    found = domains(nodes, free, level, requests, selector, tolerations)
    previous = job.status.placement if job.status is not None else None
    kept = previous.domain if previous is not None and previous.level == level else None
    chosen = choose(found, job.spec.replicas, kept)
    if chosen is not None:
        return PlacementDecision(TopologyPlacement(level=level, domain=chosen.name), mode)
    if mode == TopologyMode.PREFERRED:
        return PlacementDecision(mode=mode)
    gang = describe_gang(job)
    if not found:
        where = ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return PlacementDecision(
            mode=mode,
            waiting=f"no usable node{' with ' + where if where else ''} the workers tolerate"
            f" carries {level}; {gang} wait for one",
            reason=Reason.NO_TOPOLOGY_DOMAIN,
            never_fits=True,
        )
    empty = domains(nodes, {}, level, requests, selector, tolerations)
    if not any(d.room >= job.spec.replicas for d in empty.values()):
        largest = _most(empty)
        return PlacementDecision(
            mode=mode,
            waiting=f"no {level} can hold {gang} even when empty; the largest holds"
            f" {largest.room} ({largest.name})",
            reason=Reason.NO_TOPOLOGY_DOMAIN,
            never_fits=True,
        )
    most = _most(found)
    return PlacementDecision(
        mode=mode,
        waiting=f"no {level} has room for {gang}; the most any has is {most.room} ({most.name})",
        reason=Reason.NO_TOPOLOGY_DOMAIN,
    )
