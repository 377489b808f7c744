"""The running operator: its cache, queue, reconcile workers, progress scraper and HTTP endpoint.

kopf delivers watch events (handlers.py); this object turns them into queued keys and runs
everything else. /metrics (Prometheus) and /healthz (liveness) share one port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carina.operators.runtime import metrics
from carina.operators.runtime.cache import QUEUEING_KINDS, Cache, Key
from carina.operators.runtime.kube import Conflict, Kube, load_api_client
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.admission import AdmissionWriter
from carina.operators.trainingjob.reconcile import Reconciler
from carina.operators.trainingjob.scraper import scrape_forever
from carina.platform.planning.nodes import taints_wanted
from carina.platform.planning.observed import JOB_LABEL

log = logging.getLogger(__name__)


class Operator:
    def __init__(self, settings: Settings, kube: Kube | None = None):
        self.settings = settings
        self.kube = kube or Kube(load_api_client(settings.api_threads))
        self.cache = Cache()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.reconciler = Reconciler(settings, self.kube, self.cache, self.queue)
        self.admission = AdmissionWriter(settings, self.kube, self.cache, self.queue)
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._tainting: dict[str, asyncio.Task[None]] = {}  # node -> its taint patch in flight

    async def start(self) -> None:
        """Fill the cache (so no job is judged before its pods are known), then start workers."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(self.settings.api_threads, "carina-api")
        )
        pods, jobs, nodes, *queueing = await asyncio.gather(
            self.kube.list_pods(JOB_LABEL),
            self.kube.list_jobs(),
            self.kube.list_nodes(),
            *(self.kube.list_queueing(kind) for kind in QUEUEING_KINDS),
        )
        # Admission's first round must not decide before the queues are known (it would find
        # every job's queue missing); from here on their watches keep them current.
        for kind, objects in zip(QUEUEING_KINDS, queueing, strict=True):
            for obj in objects:
                if kind != "localqueues" or self._watched(obj):
                    self.cache.put_queueing(kind, obj)
        for node in nodes:
            self.on_node_event(None, node)
        for pod in pods:
            if self._watched(pod):
                self.cache.put_pod(pod)
        for job in jobs:
            if not self._watched(job):
                continue
            key = self.cache.put_job(job)
            self.reconciler.note_phase(key, job)
            self.reconciler.pipelines.noted(key, job)
            self.queue.add(key)
        log.info(
            "cache filled: %d jobs, %d worker pods, %d nodes, %d cluster queues",
            len(jobs),
            len(pods),
            len(nodes),
            len(self.cache.cluster_queues),
        )
        self._tasks = [
            asyncio.create_task(self.reconciler.run_worker(), name=f"reconcile-{i}")
            for i in range(self.settings.workers)
        ]
        self._tasks.append(asyncio.create_task(self.admission.run_forever(), name="admission"))
        # Last: it ends at once when progress scraping is off (`healthy` leaves it out).
        self._tasks.append(asyncio.create_task(scrape_forever(self.reconciler), name="progress"))
        await self._serve()

    def _watched(self, obj: dict[str, Any]) -> bool:
        patterns = self.settings.namespaces
        ns = obj["metadata"]["namespace"]
        return not patterns or any(fnmatch.fnmatch(ns, p) for p in patterns)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- events from kopf ----------------------------------------------------------------------

    def on_job_event(self, type_: str | None, body: dict[str, Any]) -> None:
        pipelines = self.reconciler.pipelines
        if type_ == "DELETED":
            key = self.cache.drop_job(body)
            dependents = pipelines.dropped(key)
        else:
            key = self.cache.put_job(body)
            current = self.cache.jobs.get(key, body)
            self.reconciler.note_phase(key, current)
            dependents = pipelines.noted(key, current)
        self.queue.add(key)
        # The jobs that wait for this one: it started, moved on, finished or went away.
        for dependent in dependents:
            self.queue.add(dependent)

    def on_pod_event(self, type_: str | None, body: dict[str, Any]) -> None:
        key = self.cache.drop_pod(body) if type_ == "DELETED" else self.cache.put_pod(body)
        if key is not None and key in self.cache.jobs:
            # A gang's pods change together (scheduled, started, stopped): a short delay lets
            # one reconcile and one status write cover them all.
            self.queue.add_after(key, self.settings.pod_event_delay)

    def on_queueing_event(self, kind: str, type_: str | None, body: dict[str, Any]) -> None:
        """A ClusterQueue, LocalQueue, TrainingPriorityClass or Namespace changed: admission's
        next round reads it from the cache."""
        if type_ == "DELETED":
            self.cache.drop_queueing(kind, body)
        else:
            self.cache.put_queueing(kind, body)

    def on_node_event(self, type_: str | None, body: dict[str, Any]) -> None:
        """Keep the node; taint or untaint it by its health; move gangs off a node gone EVICT."""
        if type_ == "DELETED":
            self.cache.drop_node(body)
            return
        old, node = self.cache.put_node(body)
        taints = taints_wanted(node)
        if taints is not None and node.name not in self._tainting:
            version = body["metadata"].get("resourceVersion")
            task = asyncio.create_task(self._taint(node.name, version, taints))
            self._tainting[node.name] = task
            task.add_done_callback(lambda _: self._tainting.pop(node.name, None))
        if node.evict and (old is None or not old.evict):
            for key in self.cache.jobs_on(node.name):
                self.queue.add(key)

    async def _taint(self, node: str, version: str | None, taints: list[dict[str, Any]]) -> None:
        """Write the node's taints, only over the version they were decided on."""
        patch: dict[str, Any] = {"spec": {"taints": taints}}
        if version:
            patch["metadata"] = {"resourceVersion": version}
        try:
            await self.kube.patch_node(node, patch)
            log.info("node %s: taints now %s", node, [t.get("key") for t in taints])
        except Conflict:
            pass  # it changed meanwhile: its next event decides again
        except Exception:
            log.exception("node %s: could not write its taints", node)

    # -- /metrics and /healthz ------------------------------------------------------------------

    def healthy(self) -> bool:
        """Alive while every reconcile worker runs."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks[:-1])

    async def _serve(self) -> None:
        async def metrics_page(_: web.Request) -> web.Response:
            body = generate_latest(metrics.REGISTRY)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            ok = self.healthy()
            return web.Response(status=200 if ok else 503, text="ok" if ok else "unhealthy")

        app = web.Application()
        app.add_routes([web.get("/metrics", metrics_page), web.get("/healthz", healthz)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self.settings.port)
        await site.start()
        log.info("serving /metrics and /healthz on :%d", self.settings.port)
