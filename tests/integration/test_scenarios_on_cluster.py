"""The scenario table (tests/scenarios.py) told by the operator on a real API server.

The unit tier plays the same table through the engine, the embedded substrate and the
operator's reconciler with an in-memory API; here the operator's own pieces run against the
test cluster's kube-apiserver: `Operator` (its cache, fed by real watches on the job and its
pods, as kopf feeds it in `python -m carina.operators`), its `Reconciler` and its `Kube`
client. Each step of a scenario:

1. changes the spec (a merge patch of the TrainingJob), if the step says so;
2. plays the kubelet: pods the operator deleted go away (a deletion with no grace period);
3. makes each worker pod what the script says by writing its status subresource as a
   kubelet would (`scenarios.pod_status`: phase, conditions, container states and exit codes;
   a lost node is the taint manager's DisruptionTarget condition);
4. waits until the operator's cache has seen every change (same pods, same resourceVersions
   as the API server lists), and checks that it observes exactly the scripted workers;
5. runs one reconcile, with the step's virtual time as the reconciler's clock;
6. reads the job's status and its Events (in the order the API server stored them) back from
   the API server.

Nothing else may touch the pods while they are scripted: kwok only plays the kubelet of
nodes annotated for it, so the workers are pinned (the job's pod template: a node selector
and a toleration) to a Node of the test's own that kwok does not manage and no other pod
tolerates. The test keeps that node's Lease renewed, as a kubelet would, so the node
lifecycle controller never marks it, or its pods, unready. The scheduler binds the pods; the
runner waits for that before it writes any status.

One reconcile per step, driven by the test, not the operator's queue: the table speaks of
what one reconcile decides from one state of the world (a step's restart and the next
step's new gang are two reconciles), and a queue-driven operator would run them back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from scenarios import (
    JOB,
    SCENARIOS,
    T0,
    Outcome,
    Script,
    decisive,
    job_manifest,
    play,
    pod_status,
    scripted,
    seen,
    worker,
)

from carina.operators.runtime.kube import MERGE_PATCH, Kube
from carina.operators.runtime.settings import Settings
from carina.operators.trainingjob.operator import Operator
from carina.platform.api.types import GROUP, PLURAL, VERSION, TrainingJobStatus
from carina.platform.planning.observed import JOB_LABEL, observe_pod
from carina.platform.planning.render import pod_name
from carina.testcluster import TestCluster

pytestmark = pytest.mark.k8s

TIMEOUT = 30.0
# The test's own node: kwok manages only nodes with its annotation, and this one has none.
SCRIPTED_NODE_LABEL = "carina.dev/scripted-node"
SCRIPTED_TAINT = "carina.dev/scripted"

T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wait(check: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
    """Poll `check` until it returns something (not None); AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------- the scripted node


class _Heartbeat(threading.Thread):
    """Renews a node's Lease every few seconds, as its kubelet would."""

    def __init__(self, api: client.ApiClient, node: str) -> None:
        super().__init__(name=f"heartbeat-{node}", daemon=True)
        self.leases = client.CoordinationV1Api(api)
        self.node = node
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(5):
            # A missed beat is far inside the grace period: the next one tries again.
            with contextlib.suppress(ApiException):
                self.leases.patch_namespaced_lease(
                    self.node,
                    "kube-node-lease",
                    {"spec": {"renewTime": _now()}},
                    _content_type=MERGE_PATCH,
                )


@pytest.fixture
def scripted_node(k8s_client: client.ApiClient) -> Iterator[str]:
    """A Ready node that kwok does not manage and that only this test's workers tolerate."""
    core = client.CoreV1Api(k8s_client)
    name = f"scripted-{uuid.uuid4().hex[:12]}"  # a label value: at most 63 characters
    resources = {"cpu": "96", "memory": "1Ti", "pods": "110"}
    core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, SCRIPTED_NODE_LABEL: name},
            },
            "spec": {"taints": [{"key": SCRIPTED_TAINT, "value": name, "effect": "NoSchedule"}]},
            # Kept on create (the kubelet creates its Node with its status).
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "scripted by the test",
                        "lastHeartbeatTime": _now()[:19] + "Z",
                        "lastTransitionTime": _now()[:19] + "Z",
                    }
                ],
            },
        }
    )
    client.CoordinationV1Api(k8s_client).create_namespaced_lease(
        "kube-node-lease",
        {
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _now()},
        },
    )
    beat = _Heartbeat(k8s_client, name)
    beat.start()
    try:
        yield name
    finally:
        beat.stopped.set()
        beat.join(10)
        core.delete_node(name)
        client.CoordinationV1Api(k8s_client).delete_namespaced_lease(name, "kube-node-lease")


# ---------------------------------------------------------------- the operator's watches


class _Watch(threading.Thread):
    """List, then watch, one kind in one namespace; every event goes to `deliver` on the loop
    (what kopf does for `python -m carina.operators`)."""

    def __init__(
        self,
        what: str,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deliver: Callable[[str, dict[str, Any]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(name=f"watch-{what}", daemon=True)
        self.list_fn, self.args, self.kwargs = list_fn, args, kwargs
        self.deliver, self.loop = deliver, loop
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []

    def _send(self, type_: str, obj: dict[str, Any]) -> None:
        if not self.stopped.is_set():
            self.loop.call_soon_threadsafe(self.deliver, type_, obj)

    def run(self) -> None:
        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    resp = self.list_fn(*self.args, **self.kwargs, _preload_content=False)
                    listed = json.loads(resp.data)
                    for item in listed.get("items") or []:
                        self._send("ADDED", item)
                    version = listed["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.list_fn,
                    *self.args,
                    **self.kwargs,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=1,  # so a stopped watch ends within a second
                    deserialize=False,
                )
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._send(event["type"], obj)
            except ApiException as exc:
                if exc.status != 410:  # 410: the version is too old; list again
                    self.errors.append(exc)
                    time.sleep(0.2)
                version = None
            except Exception as exc:  # a dropped connection: watch again from `version`
                self.errors.append(exc)
                time.sleep(0.2)


# ---------------------------------------------------------------- the runner


class ClusterRun:
    """The operator's reconciler on the test cluster; the workers scripted as pod statuses."""

    def __init__(
        self,
        api: client.ApiClient,
        watch_api: client.ApiClient,
        namespace: str,
        node: str,
        spec: dict[str, Any],
    ) -> None:
        self.ns, self.node = namespace, node
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.clock = T0
        self.loop = asyncio.new_event_loop()
        settings = Settings(namespaces=(namespace,), status_min_interval=0, progress_interval=0)
        self.operator = Operator(settings, Kube(api))
        self.operator.reconciler.clock = lambda: self.clock  # the table's virtual time
        self.key = (namespace, JOB)
        core_w, custom_w = client.CoreV1Api(watch_api), client.CustomObjectsApi(watch_api)
        self.watches = [
            _Watch(
                "pods",
                core_w.list_namespaced_pod,
                (namespace,),
                {"label_selector": JOB_LABEL},
                self.operator.on_pod_event,
                self.loop,
            ),
            _Watch(
                "trainingjobs",
                custom_w.list_namespaced_custom_object,
                (GROUP, VERSION, namespace, PLURAL),
                {},
                self.operator.on_job_event,
                self.loop,
            ),
        ]
        for w in self.watches:
            w.start()
        body = job_manifest(spec)
        body["metadata"]["namespace"] = namespace
        body["spec"]["template"] = {
            "spec": {
                "nodeSelector": {SCRIPTED_NODE_LABEL: node},
                "tolerations": [
                    {
                        "key": SCRIPTED_TAINT,
                        "operator": "Equal",
                        "value": node,
                        "effect": "NoSchedule",
                    }
                ],
            }
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        self.events_seen = 0

    def close(self) -> None:
        for w in self.watches:
            w.stopped.set()
        for w in self.watches:
            w.join(10)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- what the API server holds --------------------------------------------------------------

    def _job(self) -> dict[str, Any]:
        resp = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, JOB, _preload_content=False
        )
        job: dict[str, Any] = json.loads(resp.data)
        return job

    def _pods(self) -> dict[str, dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            self.ns, label_selector=f"{JOB_LABEL}={JOB}", _preload_content=False
        )
        return {p["metadata"]["name"]: p for p in json.loads(resp.data)["items"]}

    def _events(self, uid: str) -> list[tuple[str, str]]:
        resp = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.uid={uid}", _preload_content=False
        )
        items = json.loads(resp.data)["items"]
        # A resourceVersion is the etcd revision of the write: the order they were stored in.
        items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [(e["type"], e["reason"]) for e in items]

    # -- one step --------------------------------------------------------------------------------

    def step(self, script: Script, generation: int, now: datetime, spec: dict[str, Any]) -> Outcome:
        self.clock = now
        if spec:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, JOB, {"spec": spec}, _content_type=MERGE_PATCH
            )
        self._finish_deletions()
        self._drive(script, generation, now)
        self._run(self._caught_up())
        self._check_observed(script, generation, now)
        self._run(self._reconcile())
        job = self._job()
        events = self._events(job["metadata"]["uid"])
        new, self.events_seen = events[self.events_seen :], len(events)
        return seen(TrainingJobStatus.model_validate(job.get("status") or {})), new

    def restarts(self) -> int:
        return int((self._job().get("status") or {}).get("restarts", 0))

    def _finish_deletions(self) -> None:
        """The kubelet's part of a deletion: pods the operator deleted stop and go away."""
        for name, pod in self._pods().items():
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
                self.core.delete_namespaced_pod(name, self.ns, body=body)

        def finished() -> bool | None:
            pods = self._pods().values()
            return None if any(p["metadata"].get("deletionTimestamp") for p in pods) else True

        _wait(finished, "the deleted pods to go")

    def _drive(self, script: Script, generation: int, now: datetime) -> None:
        """Make each worker pod what the script says (the pods the operator created)."""

        def bound() -> dict[str, dict[str, Any]] | None:
            pods = self._pods()
            return pods if all(p["spec"].get("nodeName") for p in pods.values()) else None

        pods = _wait(bound, f"the scheduler to bind every worker to {self.node}")
        wanted = {
            pod_name(JOB, i, g): (i, g, state) for i, g, state in scripted(script, generation)
        }
        strays = sorted(set(pods) - set(wanted))
        assert not strays, f"pods the script does not know: {strays}"
        for name, (i, g, state) in wanted.items():
            pod = pods.get(name)
            if state == "none":
                assert pod is None, f"{name} exists, the script says {state}"
                continue
            if state == "gone":
                assert pod is None or observe_pod(pod).finished, f"{name} still runs"
                continue
            assert pod is not None, f"{name} should be {state}; the operator never created it"
            assert pod["spec"]["nodeName"] == self.node
            if decisive(observe_pod(pod)) == decisive(worker(i, g, state, now)):
                continue  # already so (a pod stays Pending until something runs it)
            container = pod["spec"]["containers"][0]
            status = pod_status(state, container["name"], container["image"], now)
            self.core.patch_namespaced_pod_status(
                name, self.ns, {"status": status}, _content_type=MERGE_PATCH
            )

    async def _caught_up(self) -> None:
        """Until the operator's cache holds what the API server holds (the watches lag)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            pods, job = await asyncio.gather(
                asyncio.to_thread(self._pods), asyncio.to_thread(self._job)
            )
            live = {
                n: (p["metadata"]["uid"], int(p["metadata"]["resourceVersion"]))
                for n, p in pods.items()
            }
            cache = self.operator.cache
            cached = {
                r.name: (r.uid, r.resource_version) for r in cache.pods.get(self.key, {}).values()
            }
            cached_job = cache.jobs.get(self.key)
            job_seen = cached_job is not None and (
                cached_job["metadata"]["resourceVersion"] == job["metadata"]["resourceVersion"]
            )
            if live == cached and job_seen:
                return
            if time.monotonic() > deadline:
                errors = [e for w in self.watches for e in w.errors]
                raise AssertionError(
                    f"the operator's cache did not catch up: API server {live}, cache {cached},"
                    f" job seen {job_seen}; watch errors {errors}"
                )
            await asyncio.sleep(0.05)

    def _check_observed(self, script: Script, generation: int, now: datetime) -> None:
        """The operator observes exactly the scripted workers (and kept finished ones)."""
        records = self.operator.cache.records(self.key)
        got = {(r.worker.index, r.worker.restart): r.worker for r in records}
        for i, g, state in scripted(script, generation):
            w = got.pop((i, g), None)
            if state == "gone":
                assert w is None or w.finished, (i, g, w)
            elif state == "none":
                assert w is None, (i, g, w)
            else:
                said = f"worker {i} of generation {g} should be {state}; the operator sees {w}"
                assert w is not None, said
                assert decisive(w) == decisive(worker(i, g, state, now)), said
        assert not got, f"workers the script does not know: {got}"

    async def _reconcile(self) -> None:
        reconciler = self.operator.reconciler
        await reconciler.reconcile(self.key)
        await asyncio.gather(*reconciler._background)  # its events, posted as tasks


@pytest.fixture
def watch_client(k8s_cluster: TestCluster) -> Iterator[client.ApiClient]:
    """A client of its own for the watches (their long requests hold connections)."""
    api = config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_operator_on_a_real_api_server_tells_the_same_story(
    scenario: str,
    k8s_client: client.ApiClient,
    watch_client: client.ApiClient,
    namespace: str,
    scripted_node: str,
) -> None:
    spec, _ = SCENARIOS[scenario]
    runner = ClusterRun(k8s_client, watch_client, namespace, scripted_node, spec)
    try:
        play(scenario, runner, "operator on kube-apiserver")
    finally:
        runner.close()
