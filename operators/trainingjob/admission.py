"""The admission writer: one operator replica decides who holds quota, and writes it down.

Every `admission_interval` seconds the replica that holds the Lease `carina-admission` takes
the ClusterQueues, LocalQueues, priority classes and namespaces' labels from the operator's
cache (kopf watches them; the operator lists them once at start-up, so the first round never
decides without them), builds every queued job's view from the cache too (its spec, its
`status.queueing`, whether its workers are gone), asks `planning.queueing.schedule` for this
moment's decisions, and writes each job's `status.queueing` (only that sub-tree, at the
resourceVersion it read: a job that changed meanwhile is decided again next round) and each
ClusterQueue's usage (only when it changed). Usage is rebuilt from the jobs' statuses every
round, so a restarted operator neither forgets nor double-counts an admission. The reconcilers
act on what it wrote: create a gang once admitted, stop it (SIGTERM, checkpoint) once evicted.
An idle round reads nothing from the API server and writes nothing; the holder renews its
Lease once a third of the lease duration has passed, a replica that does not hold it reads it
each round.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from carina.operators.runtime import metrics
from carina.operators.runtime.cache import Cache, Key
from carina.operators.runtime.kube import Conflict, Kube, merge_patch
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.pipelines import Pipelines
from carina.platform.api.queues import ClusterQueue
from carina.platform.api.types import FINISHED_PHASES, TrainingJob
from carina.platform.planning.nodes import healthy_capacity
from carina.platform.planning.queue_view import (
    estimate_starts,
    eta,
    job_info,
    next_queueing,
    priority_of,
    queue_info,
    resolve,
)
from carina.platform.planning.queueing import Decisions, JobInfo, schedule
from carina.platform.planning.render import save_budget

log = logging.getLogger(__name__)

LEASE_NAME = "carina-admission"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Lease:
    """A coordination.k8s.io Lease: the replica that holds it writes admissions.

    The holder knows when it last renewed, and renews (without reading first) only once a
    third of the duration has passed; a replica that does not hold it reads it every time, and
    takes it once its holder has not renewed for the whole duration. A write that finds the
    lease changed since (Conflict) means another replica holds it.
    """

    def __init__(self, kube: Kube, namespace: str, identity: str, seconds: int) -> None:
        self.kube, self.namespace, self.identity, self.seconds = kube, namespace, identity, seconds
        self._renewed: datetime | None = None  # when this replica last wrote itself holder
        self._held: dict[str, Any] | None = None  # the lease as that write left it

    def _release(self) -> None:
        self._renewed, self._held = None, None

    async def hold(self, now: datetime) -> bool:
        """Acquire or renew; False while another live replica holds it."""
        if self._renewed is not None and now < self._renewed + timedelta(seconds=self.seconds / 3):
            return True
        lease = self._held
        if lease is None:
            lease = await self.kube.read_lease(self.namespace, LEASE_NAME)
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = spec.get("renewTime")
        if lease is not None and holder and holder != self.identity and renewed:
            last = datetime.fromisoformat(renewed.replace("Z", "+00:00"))
            duration = spec.get("leaseDurationSeconds") or self.seconds
            if now < last + timedelta(seconds=duration):
                return False
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": LEASE_NAME,
                "namespace": self.namespace,
                **(
                    {"resourceVersion": lease["metadata"]["resourceVersion"]}
                    if lease is not None
                    else {}
                ),
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.seconds,
                "renewTime": stamp,
                "acquireTime": spec.get("acquireTime") if holder == self.identity else stamp,
            },
        }
        self._release()  # until the write says otherwise
        try:
            written = await self.kube.write_lease(self.namespace, body)
        except Conflict:
            return False
        self._renewed, self._held = now, written
        return True


class AdmissionWriter:
    """Runs the admission function over the cluster's queues and writes its decisions."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        cache: Cache,
        queue: WorkQueue[Key],
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings, self.kube, self.cache, self.queue, self.clock = (
            settings,
            kube,
            cache,
            queue,
            clock,
        )
        identity = f"{socket.gethostname()}-{os.getpid()}"
        self.lease = Lease(
            kube, settings.lease_namespace, identity, settings.admission_lease_seconds
        )
        # The usage last written to each ClusterQueue (by name and uid) while holding the lease.
        self._queue_status: dict[tuple[str, str], dict[str, Any]] = {}
        self._holding = False
        self.pipelines = Pipelines(cache)
        self._quotas: dict[str, dict[str, float]] = {}
        # Each queued job parsed once per resourceVersion: validating every job again every
        # round was most of the operator's CPU at 10,000 jobs.
        self._parsed: dict[Key, tuple[str | None, TrainingJob | None]] = {}

    def _parse(self, key: Key, body: dict[str, Any]) -> TrainingJob | None:
        """The queued job as admission reads it; None when it is invalid."""
        version = body["metadata"].get("resourceVersion")
        known = self._parsed.get(key)
        if known is not None and version is not None and known[0] == version:
            return known[1]
        try:
            job: TrainingJob | None = TrainingJob.parse(body)
        except ValidationError:
            job = None
        self._parsed[key] = (version, job)
        return job

    async def run_forever(self) -> None:
        while True:
            try:
                holding = await self.lease.hold(self.clock())
                if holding and not self._holding:
                    # Another replica may have written the queues' usage meanwhile.
                    self._queue_status.clear()
                self._holding = holding
                if holding:
                    await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round decides again from what is stored
                log.exception("admission round failed")
                self._holding = False  # so the next round held writes every queue's usage
            await asyncio.sleep(self.settings.admission_interval)

    async def once(self) -> Decisions:
        """One round: read the cache, decide, write what changed."""
        now = self.clock()
        cqs = dict(self.cache.cluster_queues)
        infos = {name: queue_info(c) for name, c in cqs.items()}
        lqs = self.cache.local_queues
        classes = {name: p.value for name, p in self.cache.priority_classes.items()}
        ns_labels = self.cache.namespace_labels
        for deleted in [k for k in self._queue_status if k[0] not in cqs]:
            del self._queue_status[deleted]

        views: dict[str, tuple[Key, dict[str, Any], TrainingJob, JobInfo, str | None]] = {}
        for gone_key in self._parsed.keys() - self.cache.queued:
            del self._parsed[gone_key]
        # Only jobs that name a queue: one that names none is admitted as it stands.
        for key in sorted(self.cache.queued):
            body = self.cache.jobs[key]
            if body["metadata"].get("deletionTimestamp"):
                continue
            job = self._parse(key, body)
            if job is None:
                continue  # invalid: it fails as InvalidSpec on its own
            finished = job.status is not None and job.status.phase in FINISHED_PHASES
            held = (
                job.status is not None
                and job.status.queueing is not None
                and (job.status.queueing.admission is not None)
            )
            # Quota is released only once the workers are gone: a pod in its grace period
            # holds its GPUs, and one that finished while being deleted is about to go (its
            # final state carries the checkpoint acknowledgement). A finished pod kept for
            # its logs holds nothing.
            pods = self.cache.pods.get(key, {}).values()
            gone = not any(not r.worker.finished or r.worker.deleting for r in pods)
            if (finished or job.spec.suspend) and not held:
                continue
            if not held and not self.pipelines.gate(job).clear:
                continue  # waiting for (or failed by) an upstream job: no quota meanwhile
            cq_name, wrong, local_stopped = resolve(job, lqs, cqs, ns_labels)
            priority, no_class = priority_of(job, classes)
            info = job_info(
                job,
                f"{key[0]}/{key[1]}",
                queue=cq_name,
                priority=priority,
                misconfigured=wrong or no_class,
                local_stopped=local_stopped,
                workers_gone=gone,
                covered=infos[cq_name].quotas.keys() if cq_name in infos else None,
            )
            if (finished or job.spec.suspend) and info.held is not None and not info.evicting:
                # A finished or suspended job gives its quota back once its workers are gone.
                info = replace(info, evicting="Finished" if finished else "Suspended", active=False)
            views[info.key] = (key, body, job, info, cq_name)

        self._quotas = {n: {r: v.nominal for r, v in q.quotas.items()} for n, q in infos.items()}
        jobs = [v[3] for v in views.values()]
        # Quotas are promises; the healthy GPUs are what there is.
        capacity = healthy_capacity(self.cache.nodes.values())
        decisions = schedule(infos.values(), jobs, now.timestamp(), capacity)
        finishes = {k: when for k, v in views.items() if (when := eta(v[2])) is not None}
        starts = estimate_starts(list(infos.values()), jobs, decisions, finishes, now)
        await asyncio.gather(
            *(self._write_job(v, decisions, now, cqs, starts) for v in views.values()),
            *(self._write_queue(cq, decisions) for cq in cqs.values()),
        )
        self._observe(decisions, views)
        return decisions

    async def _write_job(
        self,
        view: tuple[Key, dict[str, Any], TrainingJob, JobInfo, str | None],
        decisions: Decisions,
        now: datetime,
        cqs: dict[str, ClusterQueue],
        starts: dict[str, datetime],
    ) -> None:
        key, body, job, info, cq_name = view
        grace = float(save_budget(job, self.settings.render))
        held_in = info.held.queue if info.held is not None else cq_name
        if held_in in cqs:
            grace = min(grace, float(cqs[held_in].spec.max_checkpoint_grace_seconds))
        queueing = next_queueing(
            job,
            info.key,
            decisions,
            now,
            local_queue=job.spec.queue,
            cluster_queue=cq_name,
            priority=info.priority,
            grace_seconds=grace,
            estimated_start=starts.get(info.key),
        )
        old = (body.get("status") or {}).get("queueing")
        new = queueing.to_wire()
        if old == new:
            return
        patch = {"queueing": merge_patch(old or {}, new) if old else new}
        meta = body["metadata"]
        try:
            updated = await self.kube.patch_job_status(
                meta["namespace"], meta["name"], meta["resourceVersion"], patch
            )
        except Conflict:
            return  # it changed since the cache saw it: the next round decides again
        self.cache.put_job(updated)
        self.queue.add(key)
        if info.key in decisions.evict:
            e = decisions.evict[info.key]
            metrics.queue_evictions.labels(cq_name or "", e.reason).inc()
        if info.key in decisions.admit and job.metadata.creation_timestamp is not None:
            waited = (now - job.metadata.creation_timestamp).total_seconds()
            metrics.queue_admission_wait.labels(decisions.admit[info.key].queue).observe(waited)

    async def _write_queue(self, cq: ClusterQueue, decisions: Decisions) -> None:
        name = cq.metadata.name
        usage = decisions.usage.get(name)
        if usage is None:
            return
        status = {
            "resources": [
                {"name": r, "reserved": v, "borrowed": usage.borrowed.get(r, 0.0)}
                for r, v in sorted(usage.reserved.items())
            ],
            "admittedJobs": usage.admitted,
            "pendingJobs": usage.pending,
        }
        written = (name, cq.metadata.uid or "")
        if self._queue_status.get(written) == status:
            return
        if await self.kube.patch_cluster_status("clusterqueues", name, status) is not None:
            self._queue_status[written] = status

    def _observe(
        self,
        decisions: Decisions,
        views: dict[str, tuple[Key, dict[str, Any], TrainingJob, JobInfo, str | None]],
    ) -> None:
        metrics.queue_pending.clear()
        counts: dict[tuple[str, str], int] = {}
        for k, p in decisions.pending.items():
            cq = views[k][4] or ""
            counts[(cq, p.reason)] = counts.get((cq, p.reason), 0) + 1
        for (cq, reason), n in counts.items():
            metrics.queue_pending.labels(cq, reason).set(n)
        for name, usage in decisions.usage.items():
            metrics.queue_admitted.labels(name).set(usage.admitted)
            for r, quota in self._quotas.get(name, {}).items():
                metrics.queue_nominal.labels(name, r).set(quota)
            for r, v in usage.reserved.items():
                metrics.queue_reserved.labels(name, r).set(v)
                metrics.queue_borrowed.labels(name, r).set(usage.borrowed.get(r, 0.0))
