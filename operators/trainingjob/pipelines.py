"""Pipelines on a cluster: each job's upstream gate from the cache, and whom to wake when.

The decision is `planning.dependencies.gate`; this module gives it its lookup (the other
jobs of the namespace, as the operator's cache holds them) and keeps an index from an
upstream's name to the jobs that name it, so that a job whose phase or step changed wakes
its dependents at once: they start, fail, or update the step their waiting reason shows. The
index is keyed by name, not uid: a job that waits for one that does not exist yet is woken
when it is created.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from carina.operators.runtime.cache import Cache, Key
from carina.platform.api.types import TrainingJob
from carina.platform.planning.dependencies import Gate, Lookup, Upstream, gate, upstream_names


class Pipelines:
    """The upstream gate's view of the cache, and the index of dependents."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        # (namespace, upstream name) -> the jobs that name it
        self._dependents: dict[tuple[str, str], set[Key]] = {}
        self._upstreams: dict[Key, frozenset[str]] = {}
        # What a dependent was last woken for: (phase, step) of each upstream.
        self._announced: dict[Key, tuple[Any, Any]] = {}
        # Each job's view as an upstream, parsed once per resourceVersion.
        self._views: dict[Key, tuple[str | None, Upstream | None]] = {}

    # -- the gate ------------------------------------------------------------------------------

    def gate(self, job: TrainingJob) -> Gate:
        """Whether `job` may start now, from what the cache holds of its namespace."""
        return gate(job, self.lookup(job.metadata.namespace or "default"))

    def lookup(self, namespace: str) -> Lookup:
        """The other jobs of `namespace` as the gate reads them (None: no such job)."""

        def view(name: str) -> Upstream | None:
            key = (namespace, name)
            body = self.cache.jobs.get(key)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            version = body["metadata"].get("resourceVersion")
            cached = self._views.get(key)
            if cached is not None and cached[0] == version and version is not None:
                return cached[1]
            try:
                upstream: Upstream | None = Upstream.of(TrainingJob.parse(body))
            except ValidationError:
                upstream = None  # it fails as InvalidSpec on its own
            self._views[key] = (version, upstream)
            return upstream

        return view

    # -- whom to wake --------------------------------------------------------------------------

    def noted(self, key: Key, body: dict[str, Any]) -> set[Key]:
        """Index a job seen in a watch event; the dependents to reconcile now (those of a job
        whose phase or step changed since they were last woken)."""
        upstreams = upstream_names(body.get("spec") or {})
        if self._upstreams.get(key) != upstreams:
            self._unindex(key)
            for name in upstreams:
                self._dependents.setdefault((key[0], name), set()).add(key)
            self._upstreams[key] = upstreams
        status = body.get("status") or {}
        now = (status.get("phase"), (status.get("progress") or {}).get("step"))
        if self._announced.get(key) == now:
            return set()
        self._announced[key] = now
        return set(self._dependents.get(key, ()))

    def dropped(self, key: Key) -> set[Key]:
        """Forget a deleted job; its dependents, which now wait for a job that is gone."""
        self._unindex(key)
        self._upstreams.pop(key, None)
        self._announced.pop(key, None)
        self._views.pop(key, None)
        return set(self._dependents.get(key, ()))

    def _unindex(self, key: Key) -> None:
        for name in self._upstreams.get(key, ()):
            waiting = self._dependents.get((key[0], name))
            if waiting is not None:
                waiting.discard(key)
                if not waiting:
                    del self._dependents[(key[0], name)]
