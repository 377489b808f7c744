"""The preflight gate: a large gang starts only on nodes that recently passed the full checks.

A job asks for it (`spec.preflight.required`), or the operator's rule does (jobs of at least
`preflight_min_gpus` GPUs). Until enough usable nodes of the job's pool carry a passing full
check (`carina.dev/health-full-pass`) newer than `spec.preflight.maxAgeSeconds`, the gang waits
with reason PreflightPending, and the gate asks the health agent to check the nodes it lacks
(annotation `carina.dev/health-check-requested`; the agent runs its invasive checks on an idle
node). Its workers then require such a node (`render.required_node_terms`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from carina.operators.runtime.cache import Cache
from carina.operators.runtime.kube import Kube
from carina.operators.runtime.settings import Settings
from carina.platform.api.reasons import Reason
from carina.platform.api.types import TrainingJob
from carina.platform.planning.engine import JobAdmission
from carina.platform.planning.nodes import preflight
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.profiles import profile_for

log = logging.getLogger(__name__)


class PreflightGate:
    """Decides whether a gated gang may start, and asks for the checks it lacks."""

    def __init__(self, settings: Settings, kube: Kube, cache: Cache) -> None:
        self.settings, self.kube, self.cache = settings, kube, cache
        self._asked: dict[str, datetime] = {}  # node -> when the gate last asked for a check
        self._background: set[asyncio.Task[Any]] = set()

    def required(self, job: TrainingJob) -> bool:
        """Whether the job is gated: its own word, else the operator's size rule."""
        own = job.spec.preflight.required
        if own is not None:
            return own
        least = self.settings.preflight_min_gpus
        return least > 0 and job.spec.replicas * job.spec.resources.gpus >= least

    def admit(
        self,
        job: TrainingJob,
        workers: list[ObservedWorker],
        admission: JobAdmission,
        now: datetime,
    ) -> tuple[JobAdmission, int | None]:
        """The admission with the gate applied, and the full-pass time workers must beat."""
        if not self.required(job):
            return admission, None
        after = int(now.timestamp()) - job.spec.preflight.max_age_seconds
        generation = job.status.restarts if job.status else 0
        placed = any(w.restart == generation and w.active for w in workers)
        if not admission.admitted or placed:
            return admission, after
        selector = dict(profile_for(job.spec.cluster).node_selector)
        view = preflight(self.cache.nodes.values(), selector, job.spec.replicas, after)
        if view.clear:
            return admission, after
        self._ask(view.to_check, now, job.spec.preflight.max_age_seconds)
        waiting = JobAdmission(
            admitted=False, message=view.message(after), reason=Reason.PREFLIGHT_PENDING
        )
        return waiting, after

    def _ask(self, nodes: tuple[str, ...], now: datetime, max_age: int) -> None:
        """Annotate the nodes for a full check, each at most once per `max_age`."""
        for name in nodes:
            last = self._asked.get(name)
            if last is not None and now - last < timedelta(seconds=max_age):
                continue
            self._asked[name] = now
            task = asyncio.create_task(self._request(name, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _request(self, name: str, now: datetime) -> None:
        try:
            await self.kube.request_health_check(name, now)
            log.info("asked the health agent for a full check of node %s (preflight)", name)
        except Exception:
            self._asked.pop(name, None)
            log.exception("node %s: could not ask for a full check", name)
