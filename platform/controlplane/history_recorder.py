"""On a cluster: record every TrainingJob in the history before it is deleted.

The control plane follows every namespace's TrainingJobs and puts the finalizer
`carina.dev/history` on each. The API server then only marks a deleted job (a TTL's delete
or a user's) with a deletionTimestamp; the recorder writes the job's record (status,
conditions, events, metrics, the tail of each worker's log: the pods are still there, since
the finalizer holds the job and with it the garbage collection of its pods) and removes the
finalizer, and the job goes. A job that finishes is recorded at once as well, while its
pods surely are there.

The finalizer is put on jobs only while history is on. With the control plane down, deleted
jobs wait for it; `kubectl patch trainingjob NAME -n NS --type=json -p
'[{"op":"remove","path":"/metadata/finalizers/0"}]'` (the index of `carina.dev/history` in
`metadata.finalizers`) lets one go without a record.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from carina.platform.api.types import FINISHED_PHASES, GROUP, PLURAL, VERSION
from carina.platform.controlplane.metrics_source import PrometheusSource
from carina.platform.history.record import (
    EventSeen,
    HistoryEvent,
    counted_events,
    merged,
    record_of,
)
from carina.platform.history.store import HistoryStore
from carina.platform.planning.render import pod_name

FINALIZER = "carina.dev/history"
# One watch request to the API server; a job whose record could not be written is tried
# again when the next request lists every job afresh.
WATCH_SECONDS = 10
_FINISHED = {str(p) for p in FINISHED_PHASES}

log = logging.getLogger("carina.history")


class ClusterRecorder:
    """Follows every TrainingJob; records it when it finishes and before it is deleted."""

    def __init__(
        self,
        custom: Any,
        core: Any,
        history: HistoryStore,
        log_lines: int,
        prometheus: PrometheusSource | None = None,
    ) -> None:
        self.custom = custom
        self.core = core
        self.history = history
        self.log_lines = log_lines
        self.prometheus = prometheus
        self._recorded: dict[str, str] = {}  # uid -> the phase last recorded
        self._deleted: set[str] = set()  # uids recorded at their deletion
        self._retry = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="carina-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WATCH_SECONDS + 5)

    def _follow(self) -> None:
        """Pass every job's watch events to `handle` until stopped."""
        from kubernetes import watch as k8s_watch

        version: str | None = None  # none: every job arrives as ADDED first
        while not self._stop.is_set():
            stream = k8s_watch.Watch()
            try:
                for event in stream.stream(
                    self.custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    if self._stop.is_set():
                        stream.stop()
                        break
                    obj = event["object"]
                    if event["type"] == "ERROR":  # 410 Gone: list again
                        version = None
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.handle(event["type"], obj)
            except Exception as exc:
                log.warning("following trainingjobs for the history: %s", exc)
                version = None
                self._stop.wait(1)
            if self._retry:
                self._retry, version = False, None

    def handle(self, kind: str, job: dict[str, Any]) -> None:
        """One watch event: finalizer on, record at the end, record and let go at deletion."""
        meta = job.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        finalizers = list(meta.get("finalizers") or [])
        phase = str((job.get("status") or {}).get("phase") or "")
        try:
            if kind == "DELETED":
                # Gone without our finalizer (history was off, or someone removed it).
                if uid not in self._deleted:
                    self._record(job, read_pods=False, deleted=True)
                self._recorded.pop(uid, None)
                self._deleted.discard(uid)
                return
            if meta.get("deletionTimestamp"):
                if FINALIZER in finalizers:
                    self._record(job, read_pods=True, deleted=True)
                    self._deleted.add(uid)
                    self._remove_finalizer(job)
                return
            if FINALIZER not in finalizers:
                self._add_finalizer(job)
            if phase in _FINISHED and self._recorded.get(uid) != phase:
                earlier = self.history.find(uid)
                if earlier is None or earlier.phase != phase:
                    self._record(job, read_pods=True, deleted=False)
                self._recorded[uid] = phase
        except Exception:
            log.exception(
                "the history record of %s/%s was not written; trying again",
                meta.get("namespace"),
                meta.get("name"),
            )
            self._retry = True

    # ------------------------------------------------------------ the record

    def _record(self, job: dict[str, Any], read_pods: bool, deleted: bool) -> None:
        meta = job.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        status = job.get("status") or {}
        progress = status.get("progress") or {}
        loss = self._loss_curve(namespace, name, meta.get("creationTimestamp"))
        if not loss and progress.get("loss") is not None:
            loss = [(int(progress.get("step") or 0), float(progress["loss"]))]
        later = record_of(
            job,
            events=self._events(namespace, name),
            loss=loss,
            logs=self._logs(job) if read_pods else {},
            # A job being deleted carries its deletionTimestamp; one already gone, now.
            deleted_at=datetime.now(UTC) if deleted and not meta.get("deletionTimestamp") else None,
        )
        self.history.put(merged(self.history.find(later.uid), later))
        self._recorded[later.uid] = later.phase

    def _events(self, namespace: str, name: str) -> list[HistoryEvent]:
        result = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=TrainingJob"
        )
        return counted_events(
            EventSeen(
                e.type or "Normal",
                e.reason or "",
                e.message or "",
                e.first_timestamp or e.event_time or e.metadata.creation_timestamp,
                e.last_timestamp or e.event_time,
                int(e.count or 1),
            )
            for e in result.items
        )

    def _logs(self, job: dict[str, Any]) -> dict[str, str]:
        """The tail of each worker's log in the job's last generation, where a pod has one."""
        from kubernetes.client.exceptions import ApiException

        meta = job.get("metadata") or {}
        replicas = int((job.get("spec") or {}).get("replicas") or 1)
        restart = int((job.get("status") or {}).get("restarts") or 0)
        logs: dict[str, str] = {}
        for index in range(replicas):
            try:
                text = self.core.read_namespaced_pod_log(
                    pod_name(str(meta.get("name")), index, restart),
                    str(meta.get("namespace")),
                    tail_lines=self.log_lines,
                )
            except ApiException:
                continue  # no pod, or no log to read (a node without a kubelet's logs)
            if text:
                logs[str(index)] = str(text)
        return logs

    def _loss_curve(self, namespace: str, name: str, created: Any) -> list[tuple[int, float]]:
        """(step, loss) from Prometheus when there is one; none otherwise."""
        if self.prometheus is None:
            return []
        since = _epoch(created) or time.time() - 86_400
        try:
            series = asyncio.run(self.prometheus.series(namespace, name, since, None))
        except Exception as exc:
            log.warning("no loss curve for %s/%s from Prometheus: %s", namespace, name, exc)
            return []
        steps = {p.time: int(p.value) for p in series.step}
        return sorted({steps[p.time]: p.value for p in series.loss if p.time in steps}.items())

    # ------------------------------------------------------------ the finalizer

    def _add_finalizer(self, job: dict[str, Any]) -> None:
        """Hold the job for its record; a job that changed meanwhile gets it at its next event."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._set_finalizers(job, [*(job["metadata"].get("finalizers") or []), FINALIZER])
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                raise

    def _remove_finalizer(self, job: dict[str, Any]) -> None:
        """Let the job go; if it changed meanwhile, read it again and retry."""
        from kubernetes.client.exceptions import ApiException

        meta = job["metadata"]
        for _ in range(5):
            kept = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            try:
                self._set_finalizers({"metadata": meta}, kept)
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status not in (409, 422):
                    raise
            meta = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
            )["metadata"]
        raise RuntimeError(f"{meta['namespace']}/{meta['name']} kept changing")

    def _set_finalizers(self, job: dict[str, Any], finalizers: list[str]) -> None:
        """Replace metadata.finalizers, if the job is still the version we read (409 if not).

        A merge patch replaces the whole list; naming the resourceVersion makes it apply only
        to the version whose list we extended, so no one else's finalizer is lost.
        """
        meta = job["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers}}
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch
        )


def _epoch(timestamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
