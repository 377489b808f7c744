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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from carina.operators.runtime import metrics
from carina.operators.runtime.cache import Cache, Key, PodRecord
from carina.operators.runtime.kube import Conflict, Kube, Refused, merge_patch
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.pipelines import Pipelines
from carina.operators.trainingjob.preflight import PreflightGate
from carina.operators.trainingjob.stragglers import StragglerReport
from carina.operators.trainingjob.topology import Topology
from carina.platform.api.manifests import field_errors
from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import (
    DamagedCheckpoint,
    Phase,
    Progress,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.planning.actions import (
    CreateWorkers,
    DeleteJob,
    FailJob,
    RestartGang,
    SuspendWorkers,
    Wait,
)
from carina.platform.planning.engine import (
    JobEvent,
    Plan,
    plan,
    plan_invalid,
    upstream_admission,
)
from carina.platform.planning.failure_policy import kept, superseded
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.placement import UNPINNED, admit
from carina.platform.planning.progress import checkpoint_at
from carina.platform.planning.queue_view import job_admission
from carina.platform.planning.render import (
    build_service,
    build_worker_pod,
    checkpoint_uri,
)
from carina.platform.planning.status import get_condition

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _checkpoint_ack(
    previous: TrainingJobStatus | None, status: TrainingJobStatus
) -> tuple[str, float | None] | None:
    """An evicted gang's Checkpointed condition, newly told: (saved|missed, seconds)."""
    now = get_condition(status, ConditionType.CHECKPOINTED)
    was = get_condition(previous, ConditionType.CHECKPOINTED) if previous else None
    if now is None or (was is not None and was.last_transition_time == now.last_transition_time):
        return None
    eviction = status.queueing.eviction if status.queueing else None
    if now.status != "True":
        return "missed", None
    asked = eviction.requested_at if eviction is not None else None
    seconds = (now.last_transition_time - asked).total_seconds() if asked else None
    return "saved", seconds


def _key_of(body: dict[str, Any]) -> Key:
    return (body["metadata"]["namespace"], body["metadata"]["name"])


def _without(status: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != key}


def _only_counts_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when two status dicts differ only in worker counts, progress, the GPU-time account,
    condition messages and the step times of the same stragglers."""

    def masked(status: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in status.items() if k not in ("workers", "progress", "goodput")}
        out["stragglers"] = [(s.get("rank"), s.get("node")) for s in status.get("stragglers") or ()]
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "message"} for c in status.get("conditions", [])
        ]
        return out

    return masked(old) == masked(new)


def _grace(job: TrainingJob, now: datetime, margin: int) -> int | None:
    """An evicted gang's grace period: until its eviction's deadline (the queue may cap the
    job's own), plus the pod's margin; None (the pod's own) for any other stop."""
    q = job.status.queueing if job.status else None
    if q is None or q.eviction is None:
        return None
    left = (q.eviction.deadline - now).total_seconds()
    return max(1, int(left) + margin)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; rate 0 never runs out."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens, self.at = float(burst), clock()

    def take(self) -> bool:
        if not self.rate:
            return True
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class Scraped:
    """What a job's rank 0 of one generation last said on its /metrics (`scraper`)."""

    restart: int  # the generation whose rank 0 said it
    progress: Progress | None  # its newest progress; None before its first logged step
    checkpoint: tuple[int, datetime] | None = None  # newest checkpoint step, when first seen
    damaged: tuple[DamagedCheckpoint, ...] = ()  # damaged checkpoints its resume passed over
    # each rank's recent compute seconds per step, by global rank (its newest report)
    rank_seconds: Mapping[int, float] = field(default_factory=dict)


class Reconciler:
    """Applies the planning functions to the cluster, one job at a time per key."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        cache: Cache,
        queue: WorkQueue[Key],
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.settings = settings
        self.kube = kube
        self.cache = cache
        self.queue = queue
        self.clock = clock
        self.scraped: dict[Key, Scraped] = {}
        self._phases: dict[Key, tuple[str, str]] = {}  # key -> (namespace, phase), for carina_jobs
        self._shared: dict[Key, str] = {}  # the job uid whose Service exists
        self._background: set[asyncio.Task[Any]] = set()
        self._event_chains: dict[Key, asyncio.Task[None]] = {}
        self._accounted: dict[Key, str] = {}  # jobs with GPU-time series, and their queue
        self._last_write: dict[Key, float] = {}  # loop time of each job's last status write
        self._first_write: dict[Key, float] = {}  # new gangs' deferred first write: deadline
        self._normal_events = TokenBucket(settings.normal_event_rate, settings.normal_event_burst)
        self.topology = Topology(cache, settings.topology_levels)
        self.pipelines = Pipelines(cache)
        self.preflight = PreflightGate(settings, kube, cache)
        self.stragglers = StragglerReport(kube, settings.straggler_health_check, clock)

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
        # Only what the current generation's rank 0 said: a restarted gang's status keeps the
        # last known progress until the new rank 0 reports.
        scraped = self.scraped.get(key)
        if scraped is not None and scraped.restart != (job.status.restarts if job.status else 0):
            scraped = None
        checkpoint = None
        if scraped is not None and scraped.checkpoint is not None:
            step, seen = scraped.checkpoint
            checkpoint = checkpoint_at(checkpoint_uri(job, self.settings.render), step, seen)
        acked = self.cache.acks.get(key)  # a stopped worker's last word
        if acked is not None and (checkpoint is None or acked.step > checkpoint.step):
            checkpoint = acked
        running = job.status is not None and job.status.phase == Phase.RUNNING
        progress = scraped.progress if scraped is not None and running else None
        damaged = scraped.damaged if scraped is not None else ()
        rank_seconds = scraped.rank_seconds if scraped is not None and running else None
        # A job waits for the jobs it depends on before anything else ...
        upstream = self.pipelines.gate(job)
        # ... then, naming a queue, has workers only while the admission writer says so.
        admission = upstream_admission(
            upstream, job_admission(job, managed=job.spec.queue is not None)
        )
        # ... and, asking for a topology, only once one domain has room for the whole gang.
        placed = self.topology.place(key, job, workers) if admission.admitted else UNPINNED
        admission = admit(admission, placed)
        # ... and, gated on a preflight, only once enough nodes passed their full checks.
        admission, full_pass_after = self.preflight.admit(job, workers, admission, now)
        unhealthy = self._unhealthy(workers)
        decided = plan(
            job,
            workers,
            now,
            admission,
            progress,
            checkpoint,
            damaged,
            acked=acked,
            unhealthy=unhealthy,
            placement=placed.placement,
            rank_seconds=rank_seconds,
            watching=self.settings.progress_interval > 0,
            upstream=upstream,
        )
        if isinstance(decided.action, CreateWorkers):
            # The pods are rendered from the planned status: it names their domain.
            planned = job.model_copy(update={"status": decided.status})
            self.topology.created(key, decided.status.placement)
            refused = await self._create_gang(key, planned, decided.action, full_pass_after)
            if refused is not None:
                decided = plan(
                    job,
                    workers,
                    now,
                    admission,
                    None,
                    checkpoint,
                    damaged,
                    refused=refused,
                    upstream=upstream,
                )
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
            await self._delete_workers(
                key,
                records,
                lambda r: not kept(r.worker, status.restarts),
                _grace(job, now, self.settings.render.grace_margin_seconds),
            )

        self.cache.prune(key, status.restarts)
        if isinstance(action, Wait) and action.until is not None:
            self.queue.add_after(key, (action.until - now).total_seconds())
        elif isinstance(action, RestartGang) and action.not_before is not None:
            self.queue.add_after(key, (action.not_before - now).total_seconds())
        elif isinstance(action, Wait) and admission.reason == Reason.NO_TOPOLOGY_DOMAIN:
            # Nothing announces room (another gang's end, a new node): look again later.
            self.queue.add_after(key, self.settings.topology_retry_seconds)
        elif isinstance(action, Wait) and admission.reason == Reason.PREFLIGHT_PENDING:
            self.queue.add_after(key, self.settings.preflight_retry_seconds)

    def _unhealthy(self, workers: list[ObservedWorker]) -> dict[str, str]:
        """The broken (EVICT) nodes among the workers', with what the health agent found."""
        out: dict[str, str] = {}
        for w in workers:
            node = self.cache.nodes.get(w.node) if w.node else None
            if node is not None and node.evict:
                out[node.name] = node.health_reason
        return out

    # -- effects -----------------------------------------------------------------------------

    async def _ensure_shared(self, key: Key, job: TrainingJob) -> None:
        """The headless Service, once per job per process (the spec travels in the pods)."""
        stamp = job.metadata.uid or ""
        if self._shared.get(key) == stamp:
            return
        await self.kube.create(build_service(job, self.settings.render))
        self._shared[key] = stamp

    async def _create_gang(
        self,
        key: Key,
        job: TrainingJob,
        action: CreateWorkers,
        full_pass_after: int | None = None,
    ) -> str | None:
        """Create the workers and their Service; what the API server said if it
        refused one as invalid (None when all went well).

        A refused object would be refused again however often it is sent: the engine fails
        the job with the API server's words instead of retrying forever. Other errors
        propagate (retried).
        """
        # One round trip: pods need not wait for their Service (DNS is only asked for once
        # the worker runs).
        results = await asyncio.gather(
            self._ensure_shared(key, job),
            self._create_workers(job, action, full_pass_after),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, Refused)]
        if refused:
            return f"the API server refused {refused[0]}"
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return None

    async def _create_workers(
        self, job: TrainingJob, action: CreateWorkers, full_pass_after: int | None = None
    ) -> None:
        """Create the pods; the first error (Refused first) once every create has answered."""
        pods = [
            build_worker_pod(job, i, action.restart, self.settings.render, full_pass_after)
            for i in action.indices
        ]
        results = await asyncio.gather(*(self.kube.create(p) for p in pods), return_exceptions=True)
        for created in results:
            if isinstance(created, dict):
                self.cache.put_pod(created)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, Refused)), errors[0])

    async def _delete_workers(
        self,
        key: Key,
        records: list[PodRecord],
        which: Callable[[PodRecord], bool],
        grace_seconds: int | None = None,
    ) -> None:
        doomed = [r for r in records if which(r) and not r.worker.deleting]
        for r in doomed:
            self.cache.deleting_ourselves(r.uid)
        ns = key[0]
        results = await asyncio.gather(
            *(self.kube.delete_pod(ns, r.name, r.uid, grace_seconds) for r in doomed)
        )
        for pod in results:
            if pod is not None and pod.get("kind") == "Pod":
                self.cache.put_pod(pod)

    async def _write_status(
        self, key: Key, body: dict[str, Any], job: TrainingJob, decided: Plan
    ) -> None:
        """Write the plan's status when it changed, then post its events."""
        old_raw = body.get("status") or {}
        previous = job.status
        if self._first_write_waits(key, body, decided):
            return
        new = decided.status.to_wire()
        # The GPU-time account alone is no news: it goes out with the next change, which
        # books the whole interval (the state it accounts for is what was last written).
        if previous is not None and _without(previous.to_wire(), "goodput") == _without(
            new, "goodput"
        ):
            return
        if (
            previous is not None
            and not decided.events
            and _only_counts_changed(previous.to_wire(), new)
        ):
            # Workers of a gang start one by one: write their counts at most every
            # status_min_interval seconds (starting_status_interval while the gang starts);
            # phases, reasons and restarts go out at once.
            interval = (
                self.settings.starting_status_interval
                if previous.phase == Phase.STARTING
                else self.settings.status_min_interval
            )
            wait = self._last_write.get(key, -1e9) + interval
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
        self._post_events(key, body, decided)
        self._count(key, job, previous, decided)
        self.stragglers.written(key, previous, decided.status)

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
        self._post_events(_key_of(body), body, decided)

    # -- what people and Prometheus see -------------------------------------------------------

    def _post_events(self, key: Key, body: dict[str, Any], decided: Plan) -> None:
        """Post a plan's events in the background, in order, after the job's earlier ones.

        Concurrent posts would reach the API server in any order, and Events carry their time
        only to the second: one chain per job keeps what a person reads in the order it
        happened.
        """
        wanted = self._unshed(decided.events)
        if not wanted:
            return
        before = self._event_chains.get(key)

        async def post() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            for e in wanted:
                await self.kube.post_event(body, e.type, str(e.reason), e.message)

        task = asyncio.create_task(post())
        self._event_chains[key] = task
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if self._event_chains.get(key) is t:
                del self._event_chains[key]

        task.add_done_callback(done)

    def _unshed(self, events: tuple[JobEvent, ...]) -> list[JobEvent]:
        """The events to post: all of them, or only the Warnings while the queue is deep.

        A Normal event says what status and conditions already say; in a burst of jobs
        it is an API write per job that slows every other job's start.
        """
        depth = self.settings.event_shed_depth
        deep = bool(depth) and len(self.queue) >= depth
        out: list[JobEvent] = []
        for e in events:
            if e.type == "Warning" or (not deep and self._normal_events.take()):
                out.append(e)
            else:
                metrics.events_shed.labels(str(e.reason)).inc()
        return out

    def _first_write_waits(self, key: Key, body: dict[str, Any], decided: Plan) -> bool:
        """Whether a new gang's first status write waits (its events go out now).

        A job whose status was never written and that just got its workers would write
        Starting, then Running once its pods run: the Starting write waits up to
        starting_status_interval so that a gang that starts in time costs one status write.
        Anything that warns (workers that cannot be scheduled, a failure), and every later
        job state, is written at once; status_min_interval 0 turns the wait off.
        """
        if (
            body.get("status")
            or decided.status.phase != Phase.STARTING
            or decided.status.placement is not None  # the domain lives in the status
            or not self.settings.status_min_interval
            or not self.settings.starting_status_interval
            or any(e.type == "Warning" for e in decided.events)
        ):
            self._first_write.pop(key, None)
            return False
        now = asyncio.get_running_loop().time()
        deadline = self._first_write.get(key)
        if deadline is None:
            deadline = now + self.settings.starting_status_interval
            self._first_write[key] = deadline
            self._post_events(key, body, decided)
        elif now >= deadline:
            del self._first_write[key]
            return False
        self.queue.add_after(key, deadline - now)
        return True

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
        ack = _checkpoint_ack(previous, status)
        if ack is not None:
            result, seconds = ack
            cq = status.queueing.cluster_queue if status.queueing else None
            metrics.checkpoint_acks.labels(cq or "", result).inc()
            if seconds is not None:
                metrics.checkpoint_ack_seconds.labels(cq or "").observe(seconds)
        g = status.goodput
        if g is not None:
            queue = (status.queueing.cluster_queue if status.queueing else None) or ""
            for account in metrics.GPU_ACCOUNTS:
                metrics.job_gpu_seconds.labels(ns, name, queue, account).set(getattr(g, account))
            metrics.job_queue_wait.labels(ns, name, queue).set(g.queue_wait_seconds)
            self._accounted[key] = queue

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
        self.scraped.pop(key, None)
        queue = self._accounted.pop(key, None)
        if queue is not None:
            for account in metrics.GPU_ACCOUNTS:
                metrics.job_gpu_seconds.remove(*key, queue, account)
            metrics.job_queue_wait.remove(*key, queue)
        self._last_write.pop(key, None)
        self._first_write.pop(key, None)
        self._shared.pop(key, None)
        self.topology.forget(key)
        self.stragglers.forget(key)
        self.cache.forget(key)
        self.queue.forget(key)
