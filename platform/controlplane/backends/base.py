"""What the routes need of a backend; `local` and `kubernetes` implement it.

Backends speak in domain terms and domain errors (below); the routes turn those into HTTP.
Jobs travel as JSON text so a backend that stores JSON (the local one) serves it without
decoding and re-encoding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from carina.platform.api.types import TrainingJob
from carina.platform.controlplane.schemas import EventList, JobList, MetricSeries


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the backend authenticated them."""

    name: str
    token: str = field(repr=False)
    groups: tuple[str, ...] = ()
    namespaces: frozenset[str] | None = None  # local backend: the token's namespaces; None = all


class BackendError(Exception):
    """Base of the errors a backend raises; each maps to one HTTP status in the routes."""


class NotFound(BackendError):
    pass


class AlreadyExists(BackendError):
    pass


class Invalid(BackendError):
    """The request breaks a rule the backend enforces (e.g. the API server's CEL rules)."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class Unavailable(BackendError):
    """Something the backend depends on (API server, Prometheus) did not answer."""


class StorageFull(Unavailable):
    """The disk holding the backend's state has no room: writes fail until it has."""


class Backend(Protocol):
    """One substrate's view of TrainingJobs, plus how it knows callers."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        """Whether requests can be served; may raise a BackendError that says why not."""
        ...

    async def authenticate(self, token: str) -> Principal | None: ...

    async def authorize(
        self, principal: Principal, namespace: str, verb: str, resource: str = "trainingjobs"
    ) -> bool: ...

    async def create(self, namespace: str, job: TrainingJob) -> str: ...

    async def get(self, namespace: str, name: str) -> str: ...

    async def list(self, namespace: str, limit: int, after: str) -> JobList | str: ...

    async def delete(self, namespace: str, name: str) -> str: ...

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> str: ...

    async def series(
        self, namespace: str, name: str, start: float | None, end: float | None
    ) -> MetricSeries: ...

    async def events(self, namespace: str, name: str) -> EventList: ...

    async def log_tail(
        self, namespace: str, name: str, index: int, lines: int, restart: int | None = None
    ) -> str:
        """The last `lines` lines of worker `index`'s log; of generation `restart` if given."""
        ...
