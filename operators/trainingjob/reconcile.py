"""One reconcile of one TrainingJob: read the cached view once, plan, apply, write status once.

The decisions are carina.platform.planning's; this module only performs them. Order matters
for idempotence (an operator killed between any two calls must decide the same thing again):
a restart, a failure and a suspension are written to status *before* any worker is stopped,
so the restart count is never lost and never counted twice (workers of an older generation
than status.restarts are simply stopped); workers are created *before* status says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from carina.operators.runtime import metrics
from carina.operators.runtime.cache import Cache, Key, PodRecord
from carina.operators.runtime.kube import Conflict, Kube, Refused, merge_patch
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.platform.api.manifests import field_errors
from carina.platform.api.reasons import ConditionType
from carina.platform.api.types import Phase, Progress, TrainingJob, TrainingJobStatus
from carina.platform.planning.actions import (
    CreateWorkers,
    DeleteJob,
    FailJob,
    RestartGang,
    SuspendWorkers,
    Wait,
)
from carina.platform.planning.engine import ADMITTED, Plan, plan, plan_invalid
from carina.platform.planning.failure_policy import kept, superseded
from carina.platform.planning.progress import newer_checkpoint
from carina.platform.planning.render import (
    build_configmap,
    build_service,
    build_worker_pod,
    checkpoint_uri,
)
from carina.platform.planning.status import get_condition

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _only_counts_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when two status dicts differ only in worker counts and condition messages."""

    def masked(status: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in status.items() if k not in ("workers", "progress")}
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "message"} for c in status.get("conditions", [])
        ]
        return out

    return masked(old) == masked(new)


class Reconciler:
    """Applies the planning functions to the cluster, one job at a time per key."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        cache: Cache,
        queue: WorkQueue,
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.settings = settings
        self.kube = kube
        self.cache = cache
        self.queue = queue
        self.clock = clock
        self.progress: dict[Key, Progress] = {}
        # The newest checkpoint step rank 0 reported, and when the scrape saw it.
        self.checkpoints: dict[Key, tuple[int, datetime]] = {}
        self._phases: dict[Key, tuple[str, str]] = {}  # key -> (namespace, phase), for carina_jobs
        self._shared: dict[Key, tuple[str, int | None]] = {}  # (uid, generation) ensured
        self._background: set[asyncio.Task[Any]] = set()
        self._last_write: dict[Key, float] = {}  # loop time of each job's last status write

    # -- the loop ----------------------------------------------------------------------------

    async def run_worker(self) -> None:
        """Take keys off the queue forever; one of `settings.workers` such loops."""
        while True:
            key = await self.queue.get()
            started = asyncio.get_running_loop().time()
            result = "ok"
            try:
                await self.reconcile(key)
                self.queue.succeeded(key)
            except Conflict as exc:
                result = "conflict"
                log.debug("reconcile %s: %s; again", key, exc)
                self.queue.retry(key)
            except Exception:
                result = "error"
                log.exception("reconcile %s failed; retrying with backoff", key)
                self.queue.retry(key)
            finally:
                elapsed = asyncio.get_running_loop().time() - started
                metrics.reconcile_duration.labels(result).observe(elapsed)
                self.queue.done(key)

    # -- one reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        body = self.cache.jobs.get(key)
        if body is None:
            self._forget(key)
            return
        if body["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the children with the job
        try:
            job = TrainingJob.parse(body)
        except ValidationError as exc:
            await self._invalid(body, exc)
            return

        now = self.clock()
        records = self.cache.records(key)
        workers = [r.worker for r in records]
        progress = self.progress.get(key)
        checkpoint = None
        if key in self.checkpoints:
            step, seen = self.checkpoints[key]
            root = checkpoint_uri(job, self.settings.render)
            checkpoint = newer_checkpoint(
                job.status.last_checkpoint if job.status else None, step, root, seen
            )
        running = job.status is not None and job.status.phase == Phase.RUNNING
        decided = plan(job, workers, now, ADMITTED, progress if running else None, checkpoint)
        if isinstance(decided.action, CreateWorkers):
            refused = await self._create_gang(key, job, decided.action)
            if refused is not None:
                decided = plan(job, workers, now, ADMITTED, None, checkpoint, refused=refused)
        action, status = decided.action, decided.status
        log.debug("%s/%s: %s -> %s", *key, type(action).__name__, status.phase)

        if isinstance(action, DeleteJob):
            meta = body["metadata"]
            await self.kube.delete_job(meta["namespace"], meta["name"], meta["uid"])
        else:
            await self._write_status(key, body, job, decided)
        if isinstance(action, RestartGang):
            replicas = job.spec.replicas
            await self._delete_workers(
                key, records, lambda r: superseded(r.worker, action.restart, replicas)
            )
        elif isinstance(action, FailJob):  # also a gang the API server refused
            await self._delete_workers(key, records, lambda r: r.worker.active)
        elif isinstance(action, SuspendWorkers):
            await self._delete_workers(key, records, lambda r: not kept(r.worker, status.restarts))

        self.cache.prune(key, status.restarts)
        if isinstance(action, Wait) and action.until is not None:
            self.queue.add_after(key, (action.until - now).total_seconds())
        elif isinstance(action, RestartGang) and action.not_before is not None:
            self.queue.add_after(key, (action.not_before - now).total_seconds())

    # -- effects -----------------------------------------------------------------------------

    async def _ensure_shared(self, key: Key, job: TrainingJob) -> None:
        """The headless Service and the spec ConfigMap, once per job generation per process."""
        stamp = (job.metadata.uid or "", job.metadata.generation)
        if self._shared.get(key) == stamp:
            return
        configmap = build_configmap(job)
        created = await asyncio.gather(
            self.kube.create(build_service(job, self.settings.render)),
            self.kube.create(configmap),
        )
        if created[1] is None:  # it existed: make sure it holds this generation's spec
            await self.kube.replace_configmap_data(configmap)
        self._shared[key] = stamp

    async def _create_gang(self, key: Key, job: TrainingJob, action: CreateWorkers) -> str | None:
        """Create the workers, their Service and ConfigMap; what the API server said if it
        refused one as invalid (None when all went well).

        A refused object would be refused again however often it is sent: the engine fails
        the job with the API server's words instead of retrying forever. Other errors
        propagate (retried).
        """
        # One round trip: pods need not wait for their Service or ConfigMap (the kubelet
        # waits for the volume; DNS is only asked for once the worker runs).
        results = await asyncio.gather(
            self._ensure_shared(key, job), self._create_workers(job, action), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, Refused)]
        if refused:
            return f"the API server refused {refused[0]}"
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return None

    async def _create_workers(self, job: TrainingJob, action: CreateWorkers) -> None:
        """Create the pods; the first error (Refused first) once every create has answered."""
        pods = [
            build_worker_pod(job, i, action.restart, self.settings.render) for i in action.indices
        ]
        results = await asyncio.gather(*(self.kube.create(p) for p in pods), return_exceptions=True)
        for created in results:
            if isinstance(created, dict):
                self.cache.put_pod(created)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, Refused)), errors[0])

    async def _delete_workers(
        self, key: Key, records: list[PodRecord], which: Callable[[PodRecord], bool]
    ) -> None:
        doomed = [r for r in records if which(r) and not r.worker.deleting]
        for r in doomed:
            self.cache.deleting_ourselves(r.uid)
        ns = key[0]
        results = await asyncio.gather(*(self.kube.delete_pod(ns, r.name, r.uid) for r in doomed))
        for pod in results:
            if pod is not None and pod.get("kind") == "Pod":
                self.cache.put_pod(pod)

    async def _write_status(
        self, key: Key, body: dict[str, Any], job: TrainingJob, decided: Plan
    ) -> None:
        """Write the plan's status when it changed, then post its events."""
        old_raw = body.get("status") or {}
        previous = job.status
        new = decided.status.to_wire()
        if previous is not None and previous.to_wire() == new:
            return
        if (
            previous is not None
            and not decided.events
            and _only_counts_changed(previous.to_wire(), new)
        ):
            # Workers of a gang start one by one: write their counts at most every
            # status_min_interval seconds; phases, reasons and restarts go out at once.
            wait = self._last_write.get(key, -1e9) + self.settings.status_min_interval
            wait -= asyncio.get_running_loop().time()
            if wait > 0:
                self.queue.add_after(key, wait)
                return
        patch = merge_patch(old_raw, new) or {}
        log.debug("%s/%s: status patch %s", *key, patch)
        self._last_write[key] = asyncio.get_running_loop().time()
        meta = body["metadata"]
        updated = await self.kube.patch_job_status(
            meta["namespace"], meta["name"], meta["resourceVersion"], patch
        )
        self.cache.put_job(updated)
        for event in decided.events:
            self._event(body, event.type, event.reason, event.message)
        self._count(key, job, previous, decided)

    async def _invalid(self, body: dict[str, Any], exc: ValidationError) -> None:
        """A stored object the models refuse (the CRD normally prevents this): fail it once."""
        try:
            previous = TrainingJobStatus.model_validate(body.get("status") or {})
        except ValidationError:
            previous = None
        problems = "; ".join(str(e) for e in field_errors(exc))
        decided = plan_invalid(previous, problems, self.clock())
        if not decided.events:
            return
        meta = body["metadata"]
        updated = await self.kube.patch_job_status(
            meta["namespace"],
            meta["name"],
            meta["resourceVersion"],
            merge_patch(body.get("status") or {}, decided.status.to_wire()) or {},
        )
        self.cache.put_job(updated)
        for event in decided.events:
            self._event(body, event.type, event.reason, event.message)

    # -- what people and Prometheus see -------------------------------------------------------

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self.kube.post_event(body, type_, str(reason), message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _count(
        self, key: Key, job: TrainingJob, previous: TrainingJobStatus | None, decided: Plan
    ) -> None:
        """The operator's metrics for a written status: jobs by phase, restarts, time to run."""
        ns, name = key
        status, action = decided.status, decided.action
        self._set_phase(key, status.phase)
        if isinstance(action, RestartGang) and status.restarts > (
            previous.restarts if previous else 0
        ):
            metrics.job_restarts.labels(ns, name, action.reason).inc()
        first_run = status.phase == Phase.RUNNING and (
            previous is None or get_condition(previous, ConditionType.RUNNING) is None
        )
        if first_run and job.metadata.creation_timestamp is not None:
            elapsed = (self.clock() - job.metadata.creation_timestamp).total_seconds()
            metrics.job_start.labels(ns).observe(max(elapsed, 0.0))

    def _set_phase(self, key: Key, phase: str) -> None:
        new = (key[0], str(phase))
        old = self._phases.get(key)
        if old == new:
            return
        if old is not None:
            metrics.jobs.labels(*old).dec()
        metrics.jobs.labels(*new).inc()
        self._phases[key] = new

    def note_phase(self, key: Key, body: dict[str, Any]) -> None:
        """Count a job seen in a watch event (also jobs this replica never wrote)."""
        phase = (body.get("status") or {}).get("phase") or Phase.PENDING
        self._set_phase(key, phase)

    def _forget(self, key: Key) -> None:
        old = self._phases.pop(key, None)
        if old is not None:
            metrics.jobs.labels(*old).dec()
        self.progress.pop(key, None)
        self.checkpoints.pop(key, None)
        self._last_write.pop(key, None)
        self._shared.pop(key, None)
        self.cache.forget(key)
        self.queue.forget(key)
