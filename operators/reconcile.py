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

from carina.operators import metrics
from carina.operators.cache import Cache, Key, PodRecord
from carina.operators.kube import Conflict, Kube, Refused, merge_patch
from carina.operators.settings import Settings
from carina.operators.workqueue import WorkQueue
from carina.platform.api import Phase, Progress, TrainingJob, TrainingJobStatus
from carina.platform.planning.actions import (
    Action,
    CreateWorkers,
    DeleteJob,
    FailJob,
    RestartGang,
    SuspendWorkers,
    Wait,
)
from carina.platform.planning.failure_policy import kept, next_action, superseded
from carina.platform.planning.progress import newer_checkpoint
from carina.platform.planning.render import (
    build_configmap,
    build_service,
    build_worker_pod,
    checkpoint_uri,
)
from carina.platform.planning.status import apply_action, derive_status, get_condition
from carina.platform.reasons import ConditionType, Reason

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
            await self._invalid(key, body, exc)
            return

        now = self.clock()
        records = self.cache.records(key)
        workers = [r.worker for r in records]
        previous = job.status
        status = derive_status(job, workers, previous, now)
        if status.phase == Phase.RUNNING and key in self.progress:
            status.progress = self.progress[key]
        if key in self.checkpoints:
            step, seen = self.checkpoints[key]
            root = checkpoint_uri(job, self.settings.render)
            saved = newer_checkpoint(status.last_checkpoint, step, root, seen)
            status.last_checkpoint = saved or status.last_checkpoint
        action = next_action(job, status, workers, now)
        if isinstance(action, CreateWorkers):
            action = await self._create_gang(key, job, action)
        status = apply_action(job, status, action, now)
        log.debug("%s/%s: %s -> %s", *key, type(action).__name__, status.phase)

        if isinstance(action, CreateWorkers):
            await self._write_status(key, body, job, status, action)
        elif isinstance(action, RestartGang):
            await self._write_status(key, body, job, status, action)
            replicas = job.spec.replicas
            await self._delete_workers(
                key, records, lambda r: superseded(r.worker, action.restart, replicas)
            )
        elif isinstance(action, FailJob):  # also a gang the API server refused
            await self._write_status(key, body, job, status, action)
            await self._delete_workers(key, records, lambda r: r.worker.active)
        elif isinstance(action, SuspendWorkers):
            await self._write_status(key, body, job, status, action)
            await self._delete_workers(key, records, lambda r: not kept(r.worker, status.restarts))
        elif isinstance(action, DeleteJob):
            meta = body["metadata"]
            await self.kube.delete_job(meta["namespace"], meta["name"], meta["uid"])
        else:
            await self._write_status(key, body, job, status, action)

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

    async def _create_gang(
        self, key: Key, job: TrainingJob, action: CreateWorkers
    ) -> CreateWorkers | FailJob:
        """Create the workers, their Service and ConfigMap; FailJob if one is refused as invalid.

        A refused object would be refused again however often it is sent: the job fails with
        the API server's words instead of retrying forever. Other errors propagate (retried).
        """
        # One round trip: pods need not wait for their Service or ConfigMap (the kubelet
        # waits for the volume; DNS is only asked for once the worker runs).
        results = await asyncio.gather(
            self._ensure_shared(key, job), self._create_workers(job, action), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, Refused)]
        if refused:
            return FailJob(Reason.WORKERS_REFUSED, f"the API server refused {refused[0]}")
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return action

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
        self,
        key: Key,
        body: dict[str, Any],
        job: TrainingJob,
        status: TrainingJobStatus,
        action: Action,
    ) -> None:
        old_raw = body.get("status") or {}
        previous = job.status
        new = status.to_wire()
        if previous is not None and previous.to_wire() == new:
            return
        if previous is not None and _only_counts_changed(previous.to_wire(), new):
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
        self._observe(key, body, job, previous, status, action)

    async def _invalid(self, key: Key, body: dict[str, Any], exc: ValidationError) -> None:
        """A stored object the models refuse (the CRD normally prevents this): fail it once."""
        if (body.get("status") or {}).get("phase") == Phase.FAILED:
            return
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())[
            :4096
        ]
        cond = {
            "type": ConditionType.FAILED.value,
            "status": "True",
            "reason": Reason.INVALID_SPEC.value,
            "message": message,
            "lastTransitionTime": now,
        }
        meta = body["metadata"]
        updated = await self.kube.patch_job_status(
            meta["namespace"],
            meta["name"],
            meta["resourceVersion"],
            {"phase": Phase.FAILED.value, "conditions": [cond], "completionTime": now},
        )
        self.cache.put_job(updated)
        self._event(body, "Warning", Reason.INVALID_SPEC, message)

    # -- what people and Prometheus see -------------------------------------------------------

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self.kube.post_event(body, type_, str(reason), message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observe(
        self,
        key: Key,
        body: dict[str, Any],
        job: TrainingJob,
        previous: TrainingJobStatus | None,
        status: TrainingJobStatus,
        action: Action,
    ) -> None:
        ns, name = key
        self._set_phase(key, status.phase)
        before = previous.phase if previous else None
        if isinstance(action, RestartGang) and status.restarts > (
            previous.restarts if previous else 0
        ):
            metrics.job_restarts.labels(ns, name, action.reason).inc()
            self._event(
                body,
                "Warning",
                action.reason,
                f"restart {status.restarts}: {action.message}".rstrip(": "),
            )
        if status.phase == before:
            return
        if status.phase == Phase.RUNNING:
            first = previous is None or get_condition(previous, ConditionType.RUNNING) is None
            if first and job.metadata.creation_timestamp is not None:
                elapsed = (self.clock() - job.metadata.creation_timestamp).total_seconds()
                metrics.job_start.labels(ns).observe(max(elapsed, 0.0))
            self._event(
                body,
                "Normal",
                Reason.WORKERS_RUNNING,
                f"{job.spec.replicas}/{job.spec.replicas} workers running",
            )
        elif status.phase == Phase.FAILED and isinstance(action, FailJob):
            self._event(body, "Warning", action.reason, action.message)
        elif status.phase == Phase.SUCCEEDED:
            self._event(body, "Normal", Reason.SUCCEEDED, "all workers succeeded")
        elif status.phase == Phase.SUSPENDED:
            self._event(body, "Normal", Reason.SUSPENDED, "workers stopped (spec.suspend)")
        elif before == Phase.SUSPENDED:
            self._event(body, "Normal", Reason.RESUMED, "resumed")

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
