"""The operator's view of the cluster, from watch events: TrainingJobs and their worker pods,
the Nodes, and what admission reads (ClusterQueues, LocalQueues, TrainingPriorityClasses and
the namespaces' labels).

kopf's watch streams feed it; the operator's own write responses feed it too, so a reconcile
right after a write sees the write even before the watch event arrives. A resourceVersion
guard keeps an older event from replacing a newer object (resourceVersions are etcd revisions;
where one is not a number the newer arrival wins).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from carina.platform.api.queues import ClusterQueue, LocalQueue, TrainingPriorityClass
from carina.platform.api.types import CheckpointStatus
from carina.platform.planning.nodes import NodeInfo, node_info
from carina.platform.planning.observed import (
    JOB_LABEL,
    ObservedWorker,
    observe_pod,
    parse_checkpoint,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name) of a TrainingJob

# The kinds admission reads (plurals, as their watches name them).
QUEUEING_KINDS = ("clusterqueues", "localqueues", "trainingpriorityclasses", "namespaces")


def _rv(obj: dict[str, Any]) -> int | None:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


def _newer(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return True
    a, b = _rv(old), _rv(new)
    return a is None or b is None or b >= a


@dataclass(frozen=True)
class PodRecord:
    """What the operator keeps of one worker pod (not the whole object)."""

    name: str
    uid: str
    resource_version: int | None
    ip: str | None
    worker: ObservedWorker


def _record(pod: dict[str, Any]) -> PodRecord:
    meta = pod["metadata"]
    return PodRecord(
        name=meta["name"],
        uid=meta.get("uid", ""),
        resource_version=_rv(pod),
        ip=(pod.get("status") or {}).get("podIP"),
        worker=observe_pod(pod),
    )


@dataclass
class Cache:
    jobs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # The jobs that name a queue: the only ones admission looks at.
    queued: set[Key] = field(default_factory=set)
    pods: dict[Key, dict[str, PodRecord]] = field(default_factory=dict)
    # The last state of worker pods deleted by someone else (a node failure, an eviction):
    # kwok and a fast kubelet delete a pod within one event batch, and without its final
    # state (DisruptionTarget) the failure policy could not tell a lost node from a user's
    # `kubectl delete`. Kept until the restart they cause is recorded (`prune`).
    tombstones: dict[Key, dict[str, PodRecord]] = field(default_factory=dict)
    # Uids of pods seen deleted (newest last), so a late event cannot bring one back.
    _gone: dict[str, None] = field(default_factory=dict)
    # Uids of pods the operator deleted itself: no tombstone for those.
    _ours: dict[str, None] = field(default_factory=dict)
    # The newest checkpoint a worker the operator stopped acknowledged in its final state
    # (an evicted gang's rank 0 saves on SIGTERM, says so, and is gone within one event batch).
    acks: dict[Key, CheckpointStatus] = field(default_factory=dict)
    # Every Node, as planning reads it (health, topology labels, what it offers).
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    # What admission reads, parsed once per change; an invalid object is left out (with a
    # warning) until a valid version of it arrives.
    cluster_queues: dict[str, ClusterQueue] = field(default_factory=dict)
    local_queues: dict[Key, LocalQueue] = field(default_factory=dict)
    priority_classes: dict[str, TrainingPriorityClass] = field(default_factory=dict)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # (uid, resourceVersion) of the version each of those was taken from, invalid ones too.
    _queueing_seen: dict[tuple[str, Key], tuple[str, int | None]] = field(default_factory=dict)
    gone_limit: int = 100_000

    def _remember(self, uids: dict[str, None], uid: str) -> None:
        uids[uid] = None
        if len(uids) > self.gone_limit:
            for old in list(uids)[: self.gone_limit // 2]:
                del uids[old]

    def _mark_gone(self, uid: str) -> None:
        self._remember(self._gone, uid)

    def deleting_ourselves(self, uid: str) -> None:
        """The operator is about to delete this pod: its disappearance is no failure."""
        self._remember(self._ours, uid)

    # -- jobs ------------------------------------------------------------------------------

    def put_job(self, body: dict[str, Any]) -> Key:
        if "managedFields" in body["metadata"]:
            # Server-side apply's bookkeeping: nothing here reads it, and as Python objects
            # it is more than half of a job's memory (a dict per field, most of them empty).
            meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
            body = {**body, "metadata": meta}
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        old = self.jobs.get(key)
        if old is not None and old["metadata"].get("uid") != body["metadata"].get("uid"):
            old = None  # a new job of the same name
        if _newer(old, body):
            self.jobs[key] = body
            if (body.get("spec") or {}).get("queue") is None:
                self.queued.discard(key)
            else:
                self.queued.add(key)
        return key

    def drop_job(self, body: dict[str, Any]) -> Key:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        old = self.jobs.get(key)
        if old is not None and old["metadata"].get("uid") == body["metadata"].get("uid"):
            del self.jobs[key]
            self.queued.discard(key)
        return key

    # -- nodes -----------------------------------------------------------------------------

    def put_node(self, body: dict[str, Any]) -> tuple[NodeInfo | None, NodeInfo]:
        """Keep a node; (what it was before, what it is now)."""
        info = node_info(body)
        old = self.nodes.get(info.name)
        self.nodes[info.name] = info
        return old, info

    def drop_node(self, body: dict[str, Any]) -> NodeInfo | None:
        return self.nodes.pop((body.get("metadata") or {}).get("name", ""), None)

    def jobs_on(self, node: str) -> list[Key]:
        """The jobs with a live worker on this node."""
        return [
            key
            for key, pods in self.pods.items()
            if any(r.worker.node == node and r.worker.active for r in pods.values())
        ]

    # -- what admission reads --------------------------------------------------------------

    def put_queueing(self, kind: str, body: dict[str, Any]) -> bool:
        """Keep a ClusterQueue, LocalQueue, TrainingPriorityClass or Namespace (`kind` is its
        plural); False when an older version than the one kept, so nothing changed."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        uid, rv = meta.get("uid") or "", _rv(body)
        seen = self._queueing_seen.get((kind, key))
        kept = seen[1] if seen is not None and seen[0] == uid else None
        if kept is not None and rv is not None and rv < kept:
            return False
        self._queueing_seen[(kind, key)] = (uid, rv)
        if kind == "namespaces":
            self.namespace_labels[key[1]] = dict(meta.get("labels") or {})
            return True
        try:
            if kind == "clusterqueues":
                self.cluster_queues[key[1]] = ClusterQueue.model_validate(body)
            elif kind == "localqueues":
                self.local_queues[(key[0] or "default", key[1])] = LocalQueue.model_validate(body)
            elif kind == "trainingpriorityclasses":
                self.priority_classes[key[1]] = TrainingPriorityClass.model_validate(body)
            else:
                raise KeyError(kind)
        except ValidationError as exc:
            log.warning("%s %s is invalid and ignored: %s", body.get("kind") or kind, key[1], exc)
            self._forget_queueing(kind, key)
        return True

    def drop_queueing(self, kind: str, body: dict[str, Any]) -> None:
        """A ClusterQueue, LocalQueue, TrainingPriorityClass or Namespace was deleted."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        seen = self._queueing_seen.get((kind, key))
        if seen is not None and seen[0] != (meta.get("uid") or ""):
            return  # a newer object of that name is kept
        self._queueing_seen.pop((kind, key), None)
        self._forget_queueing(kind, key)

    def _forget_queueing(self, kind: str, key: Key) -> None:
        if kind == "clusterqueues":
            self.cluster_queues.pop(key[1], None)
        elif kind == "localqueues":
            self.local_queues.pop((key[0] or "default", key[1]), None)
        elif kind == "trainingpriorityclasses":
            self.priority_classes.pop(key[1], None)
        elif kind == "namespaces":
            self.namespace_labels.pop(key[1], None)

    # -- pods ------------------------------------------------------------------------------

    @staticmethod
    def job_of(pod: dict[str, Any]) -> Key | None:
        meta = pod.get("metadata") or {}
        job = (meta.get("labels") or {}).get(JOB_LABEL)
        return (meta["namespace"], job) if job else None

    def put_pod(self, pod: dict[str, Any]) -> Key | None:
        key = self.job_of(pod)
        if key is None or pod["metadata"].get("uid") in self._gone:
            return key
        rec = _record(pod)
        pods = self.pods.setdefault(key, {})
        old = pods.get(rec.name)
        if (
            old is None
            or old.uid != rec.uid
            or old.resource_version is None
            or rec.resource_version is None
            or rec.resource_version >= old.resource_version
        ):
            pods[rec.name] = rec
            self.tombstones.get(key, {}).pop(rec.name, None)
        return key

    def drop_pod(self, pod: dict[str, Any]) -> Key | None:
        key = self.job_of(pod)
        if key is None:
            return None
        uid = pod["metadata"].get("uid", "")
        self._mark_gone(uid)
        pods = self.pods.get(key, {})
        name = pod["metadata"]["name"]
        rec = pods.get(name)
        if rec is not None and rec.uid == uid:
            del pods[rec.name]
            rec = None
        if not pods:
            self.pods.pop(key, None)
        final = _record(pod).worker
        ack = parse_checkpoint(final.termination_message, final.finished_at)
        if ack is not None and (key not in self.acks or ack.step > self.acks[key].step):
            self.acks[key] = ack
        if rec is None and uid not in self._ours:  # no newer pod of that name
            last = _record(pod)
            last = replace(last, worker=replace(last.worker, deleting=True))
            self.tombstones.setdefault(key, {})[name] = last
        return key

    def records(self, key: Key) -> list[PodRecord]:
        """The job's live worker pods, and the last state of those deleted by others."""
        live = self.pods.get(key, {})
        gone = [r for n, r in self.tombstones.get(key, {}).items() if n not in live]
        return [*live.values(), *gone]

    def prune(self, key: Key, generation: int) -> None:
        """Forget tombstones older than the job's current generation (their restart is done)."""
        stones = self.tombstones.get(key)
        if stones:
            for name in [n for n, r in stones.items() if r.worker.restart < generation]:
                del stones[name]
            if not stones:
                del self.tombstones[key]

    def forget(self, key: Key) -> None:
        """Drop a deleted job's pods (the garbage collector deletes them)."""
        self.tombstones.pop(key, None)
        self.acks.pop(key, None)
        for rec in self.pods.pop(key, {}).values():
            self._mark_gone(rec.uid)
