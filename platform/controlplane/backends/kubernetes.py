"""The kubernetes backend: TrainingJob objects through the API server, RBAC as the judge.

A caller's bearer token is checked with a TokenReview; what it may do is asked of the API
server with a SubjectAccessReview for the caller (user and groups), verb and resource in
that namespace. Kubernetes RBAC thus stays the one source of truth: granting someone
`create trainingjobs` in a namespace lets them submit through kubectl and through REST
alike. The server then acts with its own service account, so it needs `create` on
tokenreviews and subjectaccessreviews and the TrainingJob, event and pod-log rights the
chart's ClusterRole gives it, and read on the queue kinds (the queue routes). ClusterQueues
are cluster-scoped: their SubjectAccessReview names no namespace. Answers are cached for a
few seconds per token, the way the API server's own webhook authenticator caches them.
With a job history (`CARINA_HISTORY_URL`), `history_recorder.ClusterRecorder` also follows
every namespace's jobs and records each before it is deleted (docs/architecture.md, "Job
history").
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from carina.platform.api.queues import ClusterQueue, LocalQueue
from carina.platform.api.types import GROUP, PLURAL, VERSION, TrainingJob
from carina.platform.controlplane.backend_errors import (
    AlreadyExists,
    Invalid,
    NotFound,
    Unavailable,
)
from carina.platform.controlplane.backends.base import Principal
from carina.platform.controlplane.history_keeping import Pruner, open_history
from carina.platform.controlplane.history_recorder import ClusterRecorder
from carina.platform.controlplane.job_watch import (
    ADDED,
    DELETED,
    MODIFIED,
    JobWatch,
    WatchEvent,
)
from carina.platform.controlplane.metrics_source import PrometheusSource
from carina.platform.controlplane.queue_summaries import (
    cluster_queue_summary,
    local_queue_counts,
    local_queue_out,
    pending_jobs,
    queued_job,
)
from carina.platform.controlplane.schemas import (
    ClusterQueueDetail,
    ClusterQueueList,
    EventList,
    EventOut,
    JobList,
    LocalQueueList,
    MetricSeries,
)
from carina.platform.controlplane.settings import Settings
from carina.platform.planning.render import pod_name

CACHE_SECONDS = 10.0
CLUSTER_QUEUES = "clusterqueues"
LOCAL_QUEUES = "localqueues"
# resource -> (API group, resource, subresource) for SubjectAccessReview
_RESOURCES = {
    "trainingjobs": (GROUP, PLURAL, None),
    "pods/log": ("", "pods", "log"),
    "events": ("", "events", None),
    CLUSTER_QUEUES: (GROUP, CLUSTER_QUEUES, None),
    LOCAL_QUEUES: (GROUP, LOCAL_QUEUES, None),
}
PAGE = 500  # objects per list call when every one is needed
# How long one watch request to the API server lasts: a watcher that has gone is let go
# within this, and the next request resumes from the last resourceVersion seen.
WATCH_SECONDS = 30

log = logging.getLogger("carina.server")


class KubernetesBackend:
    """The Backend interface over the Kubernetes API (kubernetes python client)."""

    name = "kubernetes"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prometheus = (
            PrometheusSource(settings.prometheus_url) if settings.prometheus_url else None
        )
        self.history = open_history(settings)
        self.pruner = Pruner(self.history, settings) if self.history is not None else None
        self.recorder: ClusterRecorder | None = None
        self._api: Any = None
        self._authn: dict[str, tuple[float, Principal | None]] = {}
        self._authz: dict[tuple[str, str, str, str], tuple[float, bool]] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._connect)
        if self.history is not None and self.pruner is not None:
            self.recorder = ClusterRecorder(
                self.custom,
                self.core,
                self.history,
                self.settings.history_log_lines,
                self.prometheus,
            )
            self.recorder.start()
            self.pruner.start()

    def _connect(self) -> None:
        from kubernetes import client

        from carina.platform.controlplane.cluster import api_client

        api = api_client(self.settings.kubeconfig)
        self._api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.authn = client.AuthenticationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)

    async def stop(self) -> None:
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.stop)
        if self.pruner is not None:
            await asyncio.to_thread(self.pruner.stop)
        if self._api is not None:
            await asyncio.to_thread(self._api.close)

    async def ready(self) -> bool:
        if self._api is None:
            return False
        try:
            await asyncio.to_thread(self.custom.get_api_resources, GROUP, VERSION)
        except Exception:
            return False
        return True

    # ------------------------------------------------------------ who is calling

    async def authenticate(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._authn.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        result = await self._call(self.authn.create_token_review, review)
        status = result.status
        principal = None
        if status is not None and status.authenticated:
            principal = Principal(
                name=status.user.username, token=token, groups=tuple(status.user.groups or ())
            )
        self._authn[key] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal

    async def authorize(
        self, principal: Principal, namespace: str, verb: str, resource: str = "trainingjobs"
    ) -> bool:
        key = (principal.name, namespace, verb, resource)
        cached = self._authz.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        group, plural, sub = _RESOURCES[resource]
        attributes = {"verb": verb, "group": group, "resource": plural}
        if namespace:  # none: a cluster-scoped resource
            attributes["namespace"] = namespace
        if sub:
            attributes["subresource"] = sub
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": principal.name,
                "groups": list(principal.groups),
                "resourceAttributes": attributes,
            },
        }
        result = await self._call(self.authz.create_subject_access_review, review)
        allowed = bool(result.status and result.status.allowed)
        self._authz[key] = (time.monotonic() + CACHE_SECONDS, allowed)
        return allowed

    # ------------------------------------------------------------ jobs

    async def create(self, namespace: str, job: TrainingJob) -> str:
        body = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        body["metadata"]["namespace"] = namespace
        obj = await self._call(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body
        )
        return json.dumps(obj)

    async def get(self, namespace: str, name: str) -> str:
        obj = await self._call(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return json.dumps(obj)

    async def list(self, namespace: str, limit: int, after: str) -> JobList | str:
        page = await self._call(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            limit=limit,
            _continue=after or None,
        )
        cont = (page.get("metadata") or {}).get("continue") or None
        return json.dumps(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TrainingJobList",
                "metadata": {"continue": cont},
                "items": page.get("items", []),
            }
        )

    async def delete(self, namespace: str, name: str) -> str:
        obj = await self._call(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        await self._call(
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body={"propagationPolicy": "Foreground"},
        )
        return json.dumps(obj)

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> str:
        obj = await self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": {"suspend": suspend}},
        )
        return json.dumps(obj)

    async def watch(self, namespace: str, name: str | None) -> JobWatch:
        """A watcher fed by a thread that follows the API server's watch of the jobs."""
        if name is not None:
            await self.get(namespace, name)  # NotFound before any stream starts
        watch = JobWatch(namespace, name)
        threading.Thread(
            target=self._follow, args=(watch,), name="carina-watch", daemon=True
        ).start()
        return watch

    def _follow(self, watch: JobWatch) -> None:
        """Pass the API server's watch events on until the watcher closes (in a thread)."""
        from kubernetes import watch as k8s_watch

        selector = {"field_selector": f"metadata.name={watch.name}"} if watch.name else {}
        version: str | None = None  # none: the API server first sends ADDED for each job
        while not watch.closed:
            stream = k8s_watch.Watch()
            try:
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    watch.namespace,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    **selector,
                ):
                    if watch.closed:
                        stream.stop()
                        break
                    obj = event["object"]
                    if event["type"] == "ERROR":  # 410 Gone: list again from now
                        version = None
                        break
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    if event["type"] not in (ADDED, MODIFIED, DELETED):
                        continue  # BOOKMARK: only a newer resourceVersion
                    watch.put_threadsafe(
                        WatchEvent(
                            event["type"], watch.namespace, meta.get("name", ""), json.dumps(obj)
                        )
                    )
            except Exception as exc:
                log.warning("watching trainingjobs in %s: %s", watch.namespace, exc)
                version = None
                time.sleep(1)

    # ------------------------------------------------------------ what happened

    async def series(
        self, namespace: str, name: str, start: float | None, end: float | None
    ) -> MetricSeries:
        obj = json.loads(await self.get(namespace, name))
        if self.prometheus is None:
            return MetricSeries(source="none")  # no Prometheus configured: status.progress only
        created = obj["metadata"].get("creationTimestamp", "")
        since = start or _epoch(created) or time.time() - 3600
        return await self.prometheus.series(namespace, name, since, end)

    async def events(self, namespace: str, name: str) -> EventList:
        await self.get(namespace, name)
        result = await self._call(
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=TrainingJob",
        )

        def when(event: Any) -> datetime:
            return (
                event.last_timestamp
                or event.event_time
                or event.metadata.creation_timestamp
                or datetime.fromtimestamp(0, UTC)
            )

        return EventList(
            items=[
                EventOut(
                    time=when(e),
                    type=e.type or "Normal",
                    reason=e.reason or "",
                    message=e.message or "",
                )
                for e in sorted(result.items, key=when)
            ]
        )

    async def log_tail(
        self, namespace: str, name: str, index: int, lines: int, restart: int | None = None
    ) -> str:
        """The log of worker `index`'s pod in generation `restart`.

        Without `restart`: the current generation's pod, or, while the new gang is not yet
        created, the last failed generation's. Pods are kept for the current generation and
        the last failed one only.
        """
        job = json.loads(await self.get(namespace, name))
        current = int((job.get("status") or {}).get("restarts") or 0)
        if restart is not None and restart > current:
            raise NotFound(
                f"{namespace}/{name} has restarted {current} times: there is no restart {restart}"
            )
        wanted = [restart] if restart is not None else [g for g in (current, current - 1) if g >= 0]
        for generation in wanted:
            try:
                text: str = await self._call(
                    self.core.read_namespaced_pod_log,
                    pod_name(name, index, generation),
                    namespace,
                    tail_lines=lines,
                )
            except NotFound:
                continue
            return text
        if restart is None:
            raise NotFound(f"worker {index} of {namespace}/{name} has no pod (yet)")
        raise NotFound(
            f"the pod of worker {index} of {namespace}/{name} in restart {restart} is not kept: "
            f"only the current generation ({current}) and the last failed one keep their pods"
        )

    # ------------------------------------------------------------ queues

    async def cluster_queues(self) -> ClusterQueueList:
        items = await self._list_all(CLUSTER_QUEUES)
        return ClusterQueueList(
            items=[cluster_queue_summary(cq) for cq in _parsed(items, ClusterQueue)]
        )

    async def cluster_queue(self, name: str) -> ClusterQueueDetail:
        try:
            obj = await self._call(
                self.custom.get_cluster_custom_object, GROUP, VERSION, CLUSTER_QUEUES, name
            )
        except NotFound:
            raise NotFound(
                f"ClusterQueue {name} not found: `carina queues` (GET /api/v1/clusterqueues)"
                " lists the ClusterQueues"
            ) from None
        try:
            cq = ClusterQueue.model_validate(obj)
        except ValidationError as exc:
            raise Unavailable(f"ClusterQueue {name} cannot be read: {exc}") from None
        jobs = [queued_job(j) for j in await self._list_all(PLURAL)]
        summary = cluster_queue_summary(cq)
        return ClusterQueueDetail(**summary.model_dump(), pending=pending_jobs(jobs, name))

    async def local_queues(self, namespace: str) -> LocalQueueList:
        items = await self._list_all(LOCAL_QUEUES, namespace)
        queues = sorted(_parsed(items, LocalQueue), key=lambda lq: lq.metadata.name)
        counts: dict[str, tuple[int, int]] = {}
        if any(lq.status is None for lq in queues):
            # Not yet counted by the admission writer: count this namespace's jobs here.
            counts = local_queue_counts(
                queued_job(j) for j in await self._list_all(PLURAL, namespace)
            )
        return LocalQueueList(
            items=[
                local_queue_out(
                    namespace,
                    lq.metadata.name,
                    lq.spec.cluster_queue,
                    (
                        (lq.status.pending_jobs, lq.status.admitted_jobs)
                        if lq.status is not None
                        else counts.get(lq.metadata.name, (0, 0))
                    ),
                    lq.spec.stop_policy,
                )
                for lq in queues
            ]
        )

    async def _list_all(
        self, plural: str, namespace: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Every object of a carina.dev kind (in `namespace`, or all), a page at a time."""
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            try:
                if namespace is None:
                    page = await self._call(
                        self.custom.list_cluster_custom_object,
                        GROUP,
                        VERSION,
                        plural,
                        limit=PAGE,
                        _continue=cont,
                    )
                else:
                    page = await self._call(
                        self.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        namespace,
                        plural,
                        limit=PAGE,
                        _continue=cont,
                    )
            except NotFound:
                raise Unavailable(
                    f"the API server does not serve {plural}.{GROUP}: install Carina's CRDs"
                    " (helm/carina/crds/)"
                ) from None
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue") or None
            if cont is None:
                return items

    # ------------------------------------------------------------ the API server's answers

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call off the event loop; its errors as BackendErrors."""
        from kubernetes.client.exceptions import ApiException

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            raise _backend_error(exc) from None
        except Exception as exc:  # connection refused, TLS, timeouts
            raise Unavailable(f"the Kubernetes API server did not answer: {exc}") from None


def _backend_error(exc: Any) -> Exception:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") or str(exc.reason)
    if exc.status == 404:
        return NotFound(message)
    if exc.status == 409:
        return AlreadyExists(message)
    if exc.status in (400, 422):
        causes = (body.get("details") or {}).get("causes") or []
        return Invalid(message, [(c.get("field", "(root)"), c.get("message", "")) for c in causes])
    return Unavailable(f"the Kubernetes API server answered {exc.status}: {message}")


_Model = TypeVar("_Model", bound=BaseModel)


def _parsed(items: list[dict[str, Any]], model: type[_Model]) -> list[_Model]:
    """The objects the model reads; one it cannot read is left out, not the whole answer."""
    out: list[_Model] = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except ValidationError:
            continue
    return out


def _epoch(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
