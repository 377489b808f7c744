"""The admission writer: one operator replica decides who holds quota, and writes it down.

Every `admission_interval` seconds the replica that holds the Lease `carina-admission` reads
the ClusterQueues, LocalQueues, priority classes and namespaces, builds every queued job's
view from the operator's cache (its spec, its `status.queueing`, whether its workers are
gone), asks `planning.queueing.schedule` for this moment's decisions, and writes each job's
`status.queueing` (only that sub-tree, at the resourceVersion it read: a job that changed
meanwhile is decided again next round) and each ClusterQueue's usage. Usage is rebuilt from
the jobs' statuses every round, so a restarted operator neither forgets nor double-counts an
admission. The reconcilers act on what it wrote: create a gang once admitted, stop it (SIGTERM,
checkpoint) once evicted.
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
from carina.platform.api.queues import ClusterQueue, LocalQueue, TrainingPriorityClass
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


def _parse_all(items: list[dict[str, Any]], model: type[Any]) -> list[Any]:
    out = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            name = (item.get("metadata") or {}).get("name")
            log.warning("%s %s is invalid and ignored: %s", model.__name__, name, exc)
    return out


class Lease:
    """A coordination.k8s.io Lease: the replica that holds it writes admissions."""

    def __init__(self, kube: Kube, namespace: str, identity: str, seconds: int) -> None:
        self.kube, self.namespace, self.identity, self.seconds = kube, namespace, identity, seconds

    async def hold(self, now: datetime) -> bool:
        """Acquire or renew; False while another live replica holds it."""
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
        try:
            await self.kube.write_lease(self.namespace, body)
        except Conflict:
            return False
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
        self._queue_status: dict[str, dict[str, Any]] = {}
        self.pipelines = Pipelines(cache)
        self._quotas: dict[str, dict[str, float]] = {}

    async def run_forever(self) -> None:
        while True:
            try:
                if await self.lease.hold(self.clock()):
                    await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round decides again from what is stored
                log.exception("admission round failed")
            await asyncio.sleep(self.settings.admission_interval)

    async def once(self) -> Decisions:
        """One round: read, decide, write."""
        now = self.clock()
        cq_items, lq_items, pc_items, ns_labels = await asyncio.gather(
            self.kube.list_custom("clusterqueues"),
            self.kube.list_custom("localqueues"),
            self.kube.list_custom("trainingpriorityclasses"),
            self.kube.namespace_labels(),
        )
        cqs = {c.metadata.name: c for c in _parse_all(cq_items, ClusterQueue)}
        infos = {name: queue_info(c) for name, c in cqs.items()}
        lqs = {
            (q.metadata.namespace or "default", q.metadata.name): q
            for q in _parse_all(lq_items, LocalQueue)
        }
        classes = {p.metadata.name: p.value for p in _parse_all(pc_items, TrainingPriorityClass)}

        views: dict[str, tuple[Key, dict[str, Any], TrainingJob, JobInfo, str | None]] = {}
        for key, body in list(self.cache.jobs.items()):
            if body["metadata"].get("deletionTimestamp"):
                continue
            try:
                job = TrainingJob.parse(body)
            except ValidationError:
                continue
            if job.spec.queue is None:
                continue  # unmanaged: admitted as it stands
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
            *(self._write_queue(name, decisions) for name in cqs),
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

    async def _write_queue(self, name: str, decisions: Decisions) -> None:
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
        if self._queue_status.get(name) == status:
            return
        if await self.kube.patch_cluster_status("clusterqueues", name, status) is not None:
            self._queue_status[name] = status

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
