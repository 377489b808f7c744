"""The operator's side of topology placement: the cache's nodes and workers, as `place` reads them.

`planning.placement` decides; this module gathers its inputs from the operator's cache: the
nodes (the node watch), and every other gang's live workers with what each requests (its
job's spec) and, for one not yet scheduled, the domain its gang was pinned to. Only the
workers of the namespaces the operator watches are seen: capacity other controllers' pods
hold is the admission engine's business (quota), not this one's.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from carina.operators.runtime.cache import Cache, Key
from carina.platform.api.types import (
    FINISHED_PHASES,
    TopologyPlacement,
    TrainingJob,
)
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.placement import (
    UNPINNED,
    PlacementDecision,
    PodLoad,
    place,
    pod_requests,
)
from carina.platform.planning.profiles import topology_request


def needs_placement(job: TrainingJob, workers: Sequence[ObservedWorker]) -> bool:
    """Whether the gang may get workers now: it asks for a topology, is neither finished nor
    suspended, and its current generation lacks some live worker."""
    status = job.status
    if topology_request(job) is None or job.spec.suspend:
        return False
    if status is not None and status.phase in FINISHED_PHASES:
        return False
    generation = status.restarts if status is not None else 0
    live = sum(1 for w in workers if w.restart == generation and w.active)
    return live < job.spec.replicas


class Topology:
    """Places gangs on the cached nodes; remembers what it needs of the other jobs."""

    def __init__(self, cache: Cache, levels: Sequence[str]):
        self.cache = cache
        self.levels = tuple(levels)
        # Per job: (uid, generation) and what one of its workers requests (None: unknown).
        self._requests: dict[Key, tuple[tuple[str, int | None], dict[str, float] | None]] = {}
        # The domain each gang's newest workers were pinned to, before status says so.
        self._pinned: dict[Key, TopologyPlacement | None] = {}

    def place(
        self, key: Key, job: TrainingJob, workers: Sequence[ObservedWorker]
    ) -> PlacementDecision:
        """The job's domain, if it is about to get workers (else UNPINNED, at no cost)."""
        if not needs_placement(job, workers):
            return UNPINNED
        return place(job, list(self.cache.nodes.values()), self._loads(key), self.levels)

    def created(self, key: Key, placement: TopologyPlacement | None) -> None:
        """The gang's workers were just created, pinned to `placement`."""
        self._pinned[key] = placement

    def forget(self, key: Key) -> None:
        self._requests.pop(key, None)
        self._pinned.pop(key, None)

    def _loads(self, key: Key) -> list[PodLoad]:
        """Every other gang's workers that hold (or will hold) a node."""
        out: list[PodLoad] = []
        for other, pods in self.cache.pods.items():
            if other == key:
                continue  # the gang's own workers count as free: a restart reuses their room
            requests = self._requests_of(other)
            if requests is None:
                continue
            pinned = self._pinned_of(other)
            out += [
                PodLoad(requests, r.worker.node, pinned)
                for r in pods.values()
                if not r.worker.finished  # one being deleted holds its node until it is gone
            ]
        return out

    def _requests_of(self, key: Key) -> dict[str, float] | None:
        body = self.cache.jobs.get(key)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        stamp = (str(meta.get("uid", "")), meta.get("generation"))
        known = self._requests.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            requests: dict[str, float] | None = pod_requests(TrainingJob.parse(body))
        except (ValidationError, ValueError):
            requests = None
        self._requests[key] = (stamp, requests)
        return requests

    def _pinned_of(self, key: Key) -> TopologyPlacement | None:
        if key in self._pinned:
            return self._pinned[key]
        raw = ((self.cache.jobs.get(key) or {}).get("status") or {}).get("placement")
        try:
            return TopologyPlacement.model_validate(raw) if raw else None
        except ValidationError:
            return None
