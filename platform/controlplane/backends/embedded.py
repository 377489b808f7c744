"""The local backend: jobs in SQLite, run by the embedded substrate on this machine.

Tokens come from a YAML file that maps each token to the namespaces it may use:

    tokens:
      - name: alice
        token: "..."            # or sha256: "<hex digest of the token>"
        namespaces: [team-a]    # "*" for every namespace

`carina up` writes one for the local user (all namespaces) when none exists.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carina.platform.api.manifests import field_errors
from carina.platform.api.quantity import parse_quantity
from carina.platform.api.queues import CPU, GPU, MEMORY
from carina.platform.api.types import NAME_PATTERN, TrainingJob
from carina.platform.controlplane.backend_errors import (
    AlreadyExists,
    Invalid,
    NotFound,
    StorageFull,
    Unavailable,
)
from carina.platform.controlplane.backends.base import Principal
from carina.platform.controlplane.history_keeping import Pruner, open_history
from carina.platform.controlplane.job_watch import JobWatch, StoreFeed
from carina.platform.controlplane.metrics_source import PrometheusSource
from carina.platform.controlplane.queue_summaries import (
    DEFAULT_LOCAL_QUEUE,
    QueuedJob,
    local_queue_counts,
    local_queue_out,
    machine_queue_summary,
    pending_jobs,
    queued_job,
)
from carina.platform.controlplane.schemas import (
    ClusterQueueDetail,
    ClusterQueueList,
    ClusterQueueSummary,
    EventList,
    EventOut,
    LocalQueueList,
    MetricSeries,
    Point,
)
from carina.platform.controlplane.settings import Settings
from carina.platform.embedded.capacity import visible_gpus
from carina.platform.embedded.launcher import Launcher, run_paths
from carina.platform.embedded.logs import tail
from carina.platform.embedded.paths import LocalFolders, refused_paths
from carina.platform.embedded.store import Conflict, JobRow, Store
from carina.platform.embedded.store import StorageFull as StoreFull
from carina.platform.embedded.substrate import Substrate, SubstrateConfig
from carina.platform.planning.admission import Capacity

TOKEN_FILE_NAME = "token"  # the local user's own token, next to the tokens file
MACHINE_QUEUE = "this-machine"  # the one implicit ClusterQueue: this machine's capacity
# What every token may read whatever its namespaces: the machine's one ClusterQueue. Its
# pending list shows only jobs of namespaces the caller may list (routers/queues.py).
_CLUSTER_READABLE = frozenset({"clusterqueues"})
_NAMESPACE_OR_ALL = rf"^(\*|{NAME_PATTERN[1:-1]})$"

log = logging.getLogger("carina.server")


class TokenFileError(ValueError):
    """The tokens file is not as the module docstring shows; the message says where and why."""


class TokenEntry(BaseModel):
    """One token: its name, the token (or its SHA-256) and the namespaces it may use."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=253)
    token: str | None = Field(None, min_length=1, description="quote it if it looks like a number")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    namespaces: list[Annotated[str, Field(pattern=_NAMESPACE_OR_ALL)]] = Field(
        default_factory=list, description='namespace names, or "*" for every namespace'
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            # YAML reads `namespaces: default` as a string, which would grant d, e, f ...
            raise ValueError(f"must be a list of namespace names, e.g. [{value}], not a string")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("set exactly one of token, sha256")
        return self

    def digest(self) -> str:
        """The token's SHA-256, as lowercase hex."""
        return (self.sha256 or hashlib.sha256((self.token or "").encode()).hexdigest()).lower()


class TokensDoc(BaseModel):
    """The tokens file."""

    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry] = Field(default_factory=list)


def read_tokens(path: Path) -> TokensDoc:
    """The tokens file, checked; TokenFileError naming the file, the field and the rule."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TokenFileError(f"{path}: cannot be read as YAML: {exc}") from None
    if doc is None:
        return TokensDoc()
    if not isinstance(doc, dict):
        raise TokenFileError(f"{path}: must be a mapping with a `tokens` list")
    try:
        return TokensDoc.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(str(e) for e in field_errors(exc))
        raise TokenFileError(f"{path}: {problems}") from None


class TokenFile:
    """token -> (name, namespaces), read from YAML; reloaded when the file changes.

    A file that is not valid stops the server from starting (TokenFileError). One that turns
    invalid while the server runs refuses every request with 503 until it is fixed (the log
    says why), rather than keep honouring tokens someone may have meant to revoke.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._by_digest: dict[str, tuple[str, frozenset[str] | None]] = {}
        self._problem: str | None = None
        self._reload()
        if self._problem is not None:
            raise TokenFileError(self._problem)

    def lookup(self, token: str) -> Principal | None:
        """Who holds `token`; Unavailable while the tokens file is invalid."""
        if self._reload() and self._problem is not None:
            log.error("%s; every request is refused until it is fixed", self._problem)
        if self._problem is not None:
            raise Unavailable("the server's tokens file is invalid; the server's log says why")
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, (name, namespaces) in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return Principal(name=name, token=token, namespaces=namespaces)
        return None

    def _reload(self) -> bool:
        """Read the file again if it changed; whether it did."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            self._by_digest, self._problem = {}, None
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            doc = read_tokens(self.path)
        except TokenFileError as exc:
            self._by_digest, self._problem = {}, str(exc)
            return True
        self._by_digest = {
            entry.digest(): (
                entry.name or f"token-{i}",
                None if "*" in entry.namespaces else frozenset(entry.namespaces),
            )
            for i, entry in enumerate(doc.tokens)
        }
        self._problem = None
        return True


def ensure_local_token(tokens_file: Path) -> str:
    """The local user's token (all namespaces), created with the tokens file if absent.

    TokenFileError when the tokens file it would add the token to is not valid.
    """
    own = tokens_file.parent / TOKEN_FILE_NAME
    if own.exists():
        return own.read_text().strip()
    doc = read_tokens(tokens_file) if tokens_file.exists() else TokensDoc()
    token = secrets.token_urlsafe(32)
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    doc.tokens.append(
        TokenEntry(
            name=os.environ.get("USER", "local"),
            sha256=hashlib.sha256(token.encode()).hexdigest(),
            namespaces=["*"],
        )
    )
    _write_private(tokens_file, yaml.safe_dump(doc.model_dump(exclude_none=True), sort_keys=False))
    _write_private(own, token + "\n")
    return token


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def may(principal: Principal, namespace: str, verb: str, resource: str = "trainingjobs") -> bool:
    """Whether the caller may `verb` `resource` in `namespace` ("": cluster-scoped)."""
    if namespace == "":
        return resource in _CLUSTER_READABLE and verb in ("get", "list")
    return principal.namespaces is None or namespace in principal.namespaces


def machine_capacity(settings: Settings) -> Capacity:
    """What the substrate may hand to workers: the settings, else this machine."""
    if settings.capacity_memory is not None:
        memory = parse_quantity(settings.capacity_memory)
    else:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    cpus = settings.cpus() if settings.run_workers else 0.0
    gpus = settings.capacity_gpus if settings.capacity_gpus is not None else visible_gpus()
    return Capacity(cpus=cpus, memory_bytes=memory, gpus=gpus)


# What the server writes into metadata: a created job's are its own, never the caller's.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
)


def created_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A new job's metadata as the caller may write it; Invalid (422) for finalizers.

    Fields the server owns are dropped, as the Kubernetes API server ignores a
    deletionTimestamp (and the others) on create: a job is never born deleting. Finalizers
    are refused rather than dropped: nothing on the embedded platform would ever remove one,
    so a job stored with one would claim a cleanup that no one performs.
    """
    if metadata.get("finalizers"):
        raise Invalid(
            "metadata.finalizers: the embedded platform runs no controller that removes finalizers",
            [("metadata.finalizers", "must be unset on the embedded platform")],
        )
    return {k: v for k, v in metadata.items() if k not in SERVER_METADATA and k != "finalizers"}


class LocalBackend:
    """The Backend interface over the SQLite store and the embedded substrate."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.resolved_state_dir()
        self.store = Store(self.state_dir / "carina.db")
        self.tokens = TokenFile(settings.resolved_tokens_file())
        self.capacity = machine_capacity(settings)
        self.history = open_history(settings)
        self.pruner = Pruner(self.history, settings) if self.history is not None else None
        self.substrate = Substrate(
            self.store,
            Launcher(settings.worker_command),
            SubstrateConfig(
                state_dir=self.state_dir,
                capacity=self.capacity,
                stop_grace_seconds=settings.stop_grace_seconds,
                interval_seconds=settings.reconcile_seconds,
                history_log_lines=settings.history_log_lines,
            ),
            history=self.history,
        )
        self.prometheus = (
            PrometheusSource(settings.prometheus_url) if settings.prometheus_url else None
        )
        self.local_folders = LocalFolders.for_workers(
            self.state_dir, tuple(settings.local_roots), self.substrate.launcher.base_env
        )
        self._thread: threading.Thread | None = None
        self.feed = StoreFeed(self.store)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.pruner is not None:
            self.pruner.start()
        self._thread = threading.Thread(
            target=self.substrate.run_forever, name="carina-substrate", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop the substrate and its workers; nothing when it never started.

        A server that stops before it started (it could not listen) has adopted no worker:
        the workers it would stop belong to the `carina up` that runs them.
        """
        await asyncio.to_thread(self.feed.stop)
        if self.pruner is not None:
            await asyncio.to_thread(self.pruner.stop)
        if self._thread is None:
            return
        await asyncio.to_thread(self.substrate.shutdown, self.settings.run_workers)
        await asyncio.to_thread(self._thread.join, 10)

    async def ready(self) -> bool:
        """The store answers and has room to write, and the substrate runs (when meant to).

        A full disk raises StorageFull (503 with that reason) until the folder has room again.
        """
        try:
            await asyncio.to_thread(self.store.list_jobs, "kube-system", 1)
        except Exception:
            return False
        with self._storage():
            try:
                await asyncio.to_thread(self.store.check_writable)
            except OSError:
                return False
        return not self.settings.run_workers or bool(self._thread and self._thread.is_alive())

    @contextmanager
    def _storage(self) -> Iterator[None]:
        """A write the disk had no room for becomes StorageFull, saying where and what to do."""
        try:
            yield
        except StoreFull as exc:
            raise StorageFull(
                f"no room to write on the disk of {self.state_dir} ({exc}); jobs are kept"
                " as they were, and writes work again once the disk has room"
            ) from None

    # ------------------------------------------------------------ who is calling

    async def authenticate(self, token: str) -> Principal | None:
        return await asyncio.to_thread(self.tokens.lookup, token)

    async def authorize(
        self, principal: Principal, namespace: str, verb: str, resource: str = "trainingjobs"
    ) -> bool:
        return may(principal, namespace, verb, resource)

    async def authorized_read(
        self, token: str, namespace: str, name: str | None, limit: int, after: str
    ) -> str | None:
        """A job (`name`) or a page of jobs as `get`/`list` return it, in one thread hop,
        when `token` is known and may read the namespace; else None (fast_reads.py)."""
        return await asyncio.to_thread(self._authorized_read, token, namespace, name, limit, after)

    def _authorized_read(
        self, token: str, namespace: str, name: str | None, limit: int, after: str
    ) -> str | None:
        principal = self.tokens.lookup(token)
        if principal is None or not may(principal, namespace, "get" if name else "list"):
            return None
        if name is None:
            return self._page(namespace, limit, after)
        return self._row(namespace, name).object_json()

    # ------------------------------------------------------------ jobs

    async def create(self, namespace: str, job: TrainingJob) -> str:
        return await asyncio.to_thread(self._create, namespace, job)

    def _create(self, namespace: str, job: TrainingJob) -> str:
        refused = refused_paths(job, namespace, self.local_folders)
        if refused:
            raise Invalid("; ".join(f"{path}: {why}" for path, why in refused), refused)
        manifest = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        manifest.pop("status", None)  # status is the platform's to write
        manifest["metadata"] = created_metadata(manifest["metadata"])
        try:
            with self._storage():
                row = self.store.create_job(namespace, manifest, time.time())
        except Conflict as exc:
            raise AlreadyExists(str(exc)) from None
        self.substrate.wake()
        return row.object_json()

    async def get(self, namespace: str, name: str) -> str:
        row = await asyncio.to_thread(self._row, namespace, name)
        return row.object_json()

    async def list(self, namespace: str, limit: int, after: str) -> str:
        return await asyncio.to_thread(self._page, namespace, limit, after)

    def _page(self, namespace: str, limit: int, after: str) -> str:
        items, last = self.store.page_json(namespace, limit, after)
        cont = "null" if last is None else json.dumps(last)
        return (
            '{"apiVersion":"carina.dev/v1alpha1","kind":"TrainingJobList",'
            f'"metadata":{{"continue":{cont}}},"items":[{items}]}}'
        )

    async def delete(self, namespace: str, name: str) -> str:
        return await asyncio.to_thread(self._delete, namespace, name)

    def _delete(self, namespace: str, name: str) -> str:
        with self._storage():
            row = self.store.mark_deleting(namespace, name, time.time())
            if row is None:
                raise NotFound(f"trainingjob {namespace}/{name} not found")
            if not self.settings.run_workers:  # no substrate to stop workers: nothing runs
                self.substrate.record_history(row, datetime.now(UTC))
                self.store.remove_job(row.uid)
        self.substrate.wake()
        return row.object_json()

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> str:
        return await asyncio.to_thread(self._set_suspend, namespace, name, suspend)

    def _set_suspend(self, namespace: str, name: str, suspend: bool) -> str:
        with self._storage():
            row = self.store.update_spec(namespace, name, {"suspend": suspend})
        if row is None:
            raise NotFound(f"trainingjob {namespace}/{name} not found")
        self.substrate.wake()
        return row.object_json()

    async def watch(self, namespace: str, name: str | None) -> JobWatch:
        """A watcher fed by the backend's one store feed; NotFound for a job not there."""
        if name is not None:
            await asyncio.to_thread(self._row, namespace, name)
        watch = JobWatch(namespace, name)
        await asyncio.to_thread(self.feed.add, watch)
        return watch

    # ------------------------------------------------------------ what happened

    async def series(
        self, namespace: str, name: str, start: float | None, end: float | None
    ) -> MetricSeries:
        row = await asyncio.to_thread(self._row, namespace, name)
        if self.prometheus is not None:
            return await self.prometheus.series(namespace, name, start or row.created, end)
        samples = await asyncio.to_thread(
            self.store.samples, row.uid, start or 0.0, end or float("inf")
        )
        return MetricSeries(
            source="local",
            step=[Point(time=s.time, value=s.step) for s in samples],
            loss=[Point(time=s.time, value=s.loss) for s in samples if s.loss is not None],
            tokens_per_second=[
                Point(time=s.time, value=s.tokens_per_second)
                for s in samples
                if s.tokens_per_second is not None
            ],
        )

    async def events(self, namespace: str, name: str) -> EventList:
        row = await asyncio.to_thread(self._row, namespace, name)
        events = await asyncio.to_thread(self.store.events, row.uid)
        return EventList(
            items=[
                EventOut(
                    time=datetime.fromtimestamp(e.time, UTC),
                    type=e.type,
                    reason=e.reason,
                    message=e.message,
                )
                for e in events
            ]
        )

    async def log_tail(
        self, namespace: str, name: str, index: int, lines: int, restart: int | None = None
    ) -> str:
        """The whole log's tail (every generation, each after its marker line), or one's."""
        row = await asyncio.to_thread(self._row, namespace, name)
        path = run_paths(self.state_dir, namespace, name, row.uid).log(index)
        if not await asyncio.to_thread(path.exists):
            raise NotFound(f"worker {index} of {namespace}/{name} has no log (yet)")
        if restart is None:
            return await asyncio.to_thread(tail, path, lines)
        text = await asyncio.to_thread(generation_tail, path, restart, lines)
        if text is None:
            restarts = json.loads(row.status or "{}").get("restarts", 0)
            raise NotFound(
                f"worker {index} of {namespace}/{name} has no log of restart {restart} "
                f"(the job has restarted {restarts} times)"
            )
        return text

    # ------------------------------------------------------------ queues

    def _queued_jobs(self, namespace: str | None = None) -> builtins.list[QueuedJob]:
        return [
            queued_job(row.manifest(), deleting=row.deleting)
            for row in self.store.list_jobs(namespace)
        ]

    def _machine_queue(self, jobs: builtins.list[QueuedJob]) -> ClusterQueueSummary:
        capacity = self.capacity
        nominal = {GPU: float(capacity.gpus), CPU: capacity.cpus, MEMORY: capacity.memory_bytes}
        return machine_queue_summary(MACHINE_QUEUE, nominal, jobs)

    async def cluster_queues(self) -> ClusterQueueList:
        """One implicit ClusterQueue, `this-machine`, the size of the machine."""
        jobs = await asyncio.to_thread(self._queued_jobs)
        return ClusterQueueList(items=[self._machine_queue(jobs)])

    async def cluster_queue(self, name: str) -> ClusterQueueDetail:
        if name != MACHINE_QUEUE:
            raise NotFound(
                f"ClusterQueue {name} not found: the embedded platform has one ClusterQueue,"
                f" {MACHINE_QUEUE}"
            )
        jobs = await asyncio.to_thread(self._queued_jobs)
        summary = self._machine_queue(jobs)
        # Every job here waits in the machine's queue, whichever ClusterQueue it names.
        return ClusterQueueDetail(**summary.model_dump(), pending=pending_jobs(jobs, None))

    async def local_queues(self, namespace: str) -> LocalQueueList:
        """The queues this namespace's jobs name (`default` for none), all on this machine."""
        jobs = await asyncio.to_thread(self._queued_jobs, namespace)
        counts = local_queue_counts(jobs, default=DEFAULT_LOCAL_QUEUE)
        return LocalQueueList(
            items=[
                local_queue_out(namespace, name, MACHINE_QUEUE, counts[name])
                for name in sorted(counts)
            ]
        )

    def _row(self, namespace: str, name: str) -> JobRow:
        row = self.store.get_job(namespace, name)
        if row is None:
            raise NotFound(f"trainingjob {namespace}/{name} not found")
        return row


# The line the launcher writes into a worker's log before each start (launcher.Launcher.start).
_GENERATION_MARKER = re.compile(rb"^--- carina: worker \d+, restart (\d+)$")


def generation_tail(path: Path, restart: int, lines: int) -> str | None:
    """The last `lines` lines that generation `restart` wrote to a worker's log, or None.

    A generation can have several parts (a suspension and resumption, or a restarted
    `carina up`, starts the same generation again); they are read as one, markers included.
    """
    kept: deque[bytes] = deque(maxlen=lines)
    found = inside = False
    with path.open("rb") as f:
        for line in f:
            marker = _GENERATION_MARKER.match(line.rstrip(b"\r\n"))
            if marker is not None:
                inside = int(marker.group(1)) == restart
                found = found or inside
            if inside:
                kept.append(line)
    return b"".join(kept).decode(errors="replace") if found else None
