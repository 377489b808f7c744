"""Stragglers the engine named, made visible: a gauge per rank, and a check of its node.

The engine names stragglers in `status.stragglers` and announces each newly named rank with
a Straggler Warning event (`planning.stragglers`). Once such a status is written, this
exports `carina_job_straggler{namespace,job,rank,node}` = 1 for every named rank (the series
goes when the rank is no longer named) and, with the `straggler_health_check` setting (on by
default), annotates a newly named straggler's Node with `carina.dev/health-check-requested`
so the node health agent runs its full checks there: a rank that is slow for a reason of
its node (a throttled GPU, a degraded link) is then found and the node marked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from carina.operators.runtime import metrics
from carina.operators.runtime.cache import Key
from carina.operators.runtime.kube import Kube
from carina.platform.api.types import TrainingJobStatus
from carina.platform.planning.stragglers import newly_named

log = logging.getLogger(__name__)

Series = tuple[str, str]  # (rank, node) label values


class StragglerReport:
    """The straggler gauge's series of every job, and the node checks they ask for."""

    def __init__(self, kube: Kube, health_check: bool, clock: Callable[[], datetime]) -> None:
        self.kube, self.health_check, self.clock = kube, health_check, clock
        self._series: dict[Key, set[Series]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def written(
        self, key: Key, previous: TrainingJobStatus | None, status: TrainingJobStatus
    ) -> None:
        """A status was written: the gauge follows it; newly named ranks' nodes get checked."""
        named = {(str(s.rank), s.node or "") for s in status.stragglers or ()}
        for rank, node in self._series.get(key, set()) - named:
            metrics.job_straggler.remove(*key, rank, node)
        for rank, node in named:
            metrics.job_straggler.labels(*key, rank, node).set(1)
        if named:
            self._series[key] = named
        else:
            self._series.pop(key, None)
        if not self.health_check:
            return
        nodes = sorted({s.node for s in newly_named(previous, status) if s.node})
        for node in nodes:
            task = asyncio.create_task(self._ask(node, key))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _ask(self, node: str, key: Key) -> None:
        try:
            await self.kube.request_health_check(node, self.clock())
            log.info(
                "asked the health agent for a full check of node %s (a straggler of %s/%s)",
                node,
                *key,
            )
        except Exception:
            # Advisory: the job runs on whether or not the node gets its check.
            log.exception("node %s: could not ask for a full check", node)

    def forget(self, key: Key) -> None:
        """The job is gone: so are its series."""
        for rank, node in self._series.pop(key, set()):
            metrics.job_straggler.remove(*key, rank, node)
