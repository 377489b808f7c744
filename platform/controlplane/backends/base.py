"""What the routes need of a backend; `local` and `kubernetes` implement it.

Backends speak in domain terms and domain errors (`backend_errors`); the routes turn those
into HTTP.
Jobs travel as JSON text so a backend that stores JSON (the local one) serves it without
decoding and re-encoding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from carina.platform.api.types import TrainingJob
from carina.platform.controlplane.job_watch import JobWatch
from carina.platform.controlplane.schemas import (
    ClusterQueueDetail,
    ClusterQueueList,
    EventList,
    JobList,
    LocalQueueList,
    MetricSeries,
)
from carina.platform.history.store import HistoryStore


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the backend authenticated them."""

    name: str
    token: str = field(repr=False)
    groups: tuple[str, ...] = ()
    namespaces: frozenset[str] | None = None  # local backend: the token's namespaces; None = all


class Backend(Protocol):
    """One substrate's view of TrainingJobs, plus how it knows callers."""

    name: str
    history: HistoryStore | None  # where finished and deleted jobs are recorded; None: off

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        """Whether requests can be served; may raise a BackendError that says why not."""
        ...

    async def authenticate(self, token: str) -> Principal | None: ...

    async def authorize(
        self, principal: Principal, namespace: str, verb: str, resource: str = "trainingjobs"
    ) -> bool:
        """Whether the caller may `verb` `resource` in `namespace` ("": a cluster-scoped one)."""
        ...

    async def create(self, namespace: str, job: TrainingJob) -> str: ...

    async def get(self, namespace: str, name: str) -> str: ...

    async def list(self, namespace: str, limit: int, after: str) -> JobList | str: ...

    async def delete(self, namespace: str, name: str) -> str: ...

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> str: ...

    async def watch(self, namespace: str, name: str | None) -> JobWatch:
        """A watcher of a namespace's jobs, or of one (NotFound when that one is not there)."""
        ...

    async def series(
        self, namespace: str, name: str, start: float | None, end: float | None
    ) -> MetricSeries: ...

    async def events(self, namespace: str, name: str) -> EventList: ...

    async def log_tail(
        self, namespace: str, name: str, index: int, lines: int, restart: int | None = None
    ) -> str:
        """The last `lines` lines of worker `index`'s log; of generation `restart` if given."""
        ...

    async def cluster_queues(self) -> ClusterQueueList:
        """Every ClusterQueue: quota, usage, counts (by name)."""
        ...

    async def cluster_queue(self, name: str) -> ClusterQueueDetail:
        """One ClusterQueue with its pending jobs in queue order (all namespaces); NotFound."""
        ...

    async def local_queues(self, namespace: str) -> LocalQueueList:
        """The LocalQueues of a namespace (by name)."""
        ...
