"""The reconciler against an in-memory API: what it writes, in which order, and only once."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

from builders import make_job

from carina.operators.runtime.cache import Cache
from carina.operators.runtime.kube import Conflict
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.reconcile import Reconciler, TokenBucket
from carina.operators.trainingjob.scraper import take
from carina.workloads.contract import TerminationMessage

KEY = ("ns", "llm")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeKube:
    """Objects in dicts; every call appended to `calls` as (verb, what)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 100

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(obj)

    async def create(self, manifest):
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.calls.append(("create", f"{key[0]}/{key[1]}"))
        if key in self.objects:
            return None
        obj = copy.deepcopy(manifest)
        obj["metadata"]["uid"] = f"uid-{key[1]}-{self.rv}"
        obj["status"] = {"phase": "Pending"}
        self.objects[key] = obj
        return self._bump(obj)

    async def delete_pod(self, namespace, name, uid, grace_seconds=None):
        self.calls.append(("delete", f"Pod/{name}"))
        obj = self.objects.get(("Pod", name))
        if obj is None or obj["metadata"]["uid"] != uid:
            return None
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return self._bump(obj)

    async def delete_job(self, namespace, name, uid):
        self.calls.append(("delete", f"TrainingJob/{name}"))

    async def patch_job_status(self, namespace, name, resource_version, patch):
        self.calls.append(("patch", "TrainingJob/status"))
        job = self.objects[("TrainingJob", name)]
        if job["metadata"]["resourceVersion"] != resource_version:
            raise Conflict("stale")
        status = job.setdefault("status", {})
        for k, v in patch.items():
            if v is None:
                status.pop(k, None)
            elif isinstance(v, dict) and isinstance(status.get(k), dict):
                status[k] = {**status[k], **{a: b for a, b in v.items() if b is not None}}
            else:
                status[k] = v
        return self._bump(job)

    async def post_event(self, job, type_, reason, message):
        self.calls.append(("event", reason))


def setup(replicas: int = 2, **spec: Any) -> tuple[FakeKube, Reconciler]:
    kube = FakeKube()
    body = dict(make_job("llm").with_spec(replicas=replicas, **spec))
    body["metadata"].update(
        namespace="ns", uid="job-uid", generation=1, creationTimestamp="2026-01-01T00:00:00Z"
    )
    kube.objects[("TrainingJob", "llm")] = body
    kube._bump(body)
    cache = Cache()
    cache.put_job(copy.deepcopy(body))
    rec = Reconciler(Settings(), kube, cache, WorkQueue(), clock=lambda: NOW)  # type: ignore[arg-type]
    return kube, rec


def kwok(
    kube: FakeKube,
    rec: Reconciler,
    phase: str = "Running",
    ready: bool = True,
    only: str | None = None,
    **status,
):
    """What kwok and the watch would do: pods (all live ones, or `only`) change, the cache hears."""
    for (kind, name), obj in kube.objects.items():
        if only is not None and name != only:
            continue
        if kind == "Pod" and not obj["metadata"].get("deletionTimestamp"):
            obj["status"] = {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                **status,
            }
            rec.cache.put_pod(kube._bump(obj))


def reconcile(rec: Reconciler) -> None:
    asyncio.run(rec.reconcile(KEY))


def status(kube: FakeKube) -> dict[str, Any]:
    return kube.objects[("TrainingJob", "llm")]["status"]


def test_a_new_gang_that_starts_in_time_costs_one_status_write():
    kube, rec = setup()
    reconcile(rec)
    creates = [c for c in kube.calls if c[0] == "create"]
    assert sorted(w for _, w in creates) == [
        "Pod/llm-worker-0-r0",
        "Pod/llm-worker-1-r0",
        "Service/llm",
    ]
    # Starting waits for Running (starting_status_interval); what happened is told at once.
    assert [c for c in kube.calls if c[0] == "patch"] == []
    assert ("event", "Created") in kube.calls
    kwok(kube, rec)
    reconcile(rec)
    assert [c for c in kube.calls if c[0] == "patch"] == [("patch", "TrainingJob/status")]
    assert status(kube)["phase"] == "Running"


def test_a_gang_that_does_not_start_in_time_is_written_starting():
    kube, rec = setup()
    rec.settings = Settings(status_min_interval=1e-6, starting_status_interval=1e-6)
    reconcile(rec)
    assert "status" not in kube.objects[("TrainingJob", "llm")]
    reconcile(rec)  # the queue's delayed key: the interval has passed
    assert status(kube)["phase"] == "Starting"
    assert [c for c in kube.calls if c[0] == "patch"] == [("patch", "TrainingJob/status")]
    assert [c for c in kube.calls if c == ("event", "Created")] == [("event", "Created")]


def test_a_new_gang_that_cannot_be_scheduled_is_written_at_once():
    kube, rec = setup()  # the default settings: a healthy Starting gang waits 30 s
    reconcile(rec)
    assert "status" not in kube.objects[("TrainingJob", "llm")]
    pod = kube.objects[("Pod", "llm-worker-1-r0")]
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
        ],
    }
    rec.cache.put_pod(kube._bump(pod))
    reconcile(rec)
    assert status(kube)["phase"] == "Starting"
    ready = next(c for c in status(kube)["conditions"] if c["type"] == "WorkersReady")
    assert ready["reason"] == "Unschedulable"
    assert ("event", "Unschedulable") in kube.calls


def test_a_new_gang_is_written_starting_at_once_when_a_write_costs_nothing_to_wait_for():
    kube, rec = setup()
    rec.settings = Settings(status_min_interval=0)
    reconcile(rec)
    assert status(kube)["phase"] == "Starting"


def test_normal_events_are_shed_while_the_queue_is_deep():
    kube, rec = setup()
    rec.settings = Settings(status_min_interval=0, event_shed_depth=2)
    for other in ("a", "b"):
        rec.queue.add(("ns", other))
    reconcile(rec)
    assert status(kube)["phase"] == "Starting"
    assert [c for c in kube.calls if c[0] == "event"] == []
    # A Warning is never shed.
    kwok(kube, rec, phase="Failed", ready=False, only="llm-worker-1-r0", **exited(1))
    reconcile(rec)
    assert ("event", "WorkerFailed") in kube.calls


def test_nothing_changed_writes_nothing():
    kube, rec = setup()
    reconcile(rec)
    kwok(kube, rec)
    reconcile(rec)
    assert status(kube)["phase"] == "Running"
    kube.calls.clear()
    reconcile(rec)
    assert kube.calls == []


def exited(code: int, message: str = "") -> dict[str, Any]:
    """Pod status fields of a worker whose container exited."""
    term = {"exitCode": code, "message": message} if message else {"exitCode": code}
    return {"containerStatuses": [{"state": {"terminated": term}}]}


def test_a_restart_is_written_before_any_worker_is_deleted():
    kube, rec = setup(failurePolicy={"backoffSeconds": 0})
    reconcile(rec)
    kwok(kube, rec)
    reconcile(rec)
    kwok(kube, rec, phase="Failed", ready=False, only="llm-worker-1-r0", **exited(1))
    kube.calls.clear()
    reconcile(rec)
    verbs = [c for c in kube.calls if c[0] in ("patch", "delete")]
    assert verbs == [("patch", "TrainingJob/status"), ("delete", "Pod/llm-worker-0-r0")]
    assert status(kube)["restarts"] == 1
    assert status(kube)["phase"] == "Restarting"
    # The same view again (an operator restarted before the pods went): no second count.
    reconcile(rec)
    assert status(kube)["restarts"] == 1
    assert status(kube)["restartsByReason"]["application"] == 1


def test_stale_status_write_is_refused_and_retried_later():
    kube, rec = setup()
    rec.settings = Settings(status_min_interval=0)  # the first write goes out at once
    job = kube.objects[("TrainingJob", "llm")]
    kube._bump(job)  # someone changed the job after the cache saw it
    try:
        reconcile(rec)
        raise AssertionError("expected a conflict")
    except Conflict:
        pass
    rec.cache.put_job(copy.deepcopy(job))  # the watch event arrives
    reconcile(rec)
    assert status(kube)["phase"] == "Starting"
    pods = [k for k in kube.objects if k[0] == "Pod"]
    assert len(pods) == 2  # the retry created nothing twice


def test_a_restart_keeps_the_failed_generation_and_deletes_the_one_before():
    kube, rec = setup(failurePolicy={"backoffSeconds": 0})
    reconcile(rec)
    kwok(kube, rec)
    reconcile(rec)
    log = '{"rank": 1, "exitCode": 1, "log": "step 7\\nRuntimeError: NCCL timeout"}'
    kwok(kube, rec, phase="Failed", ready=False, only="llm-worker-1-r0", **exited(1, log))
    reconcile(rec)
    restarting = next(c for c in status(kube)["conditions"] if c["type"] == "Restarting")
    assert restarting["message"] == (
        "restart 1: worker 1 (rank 1) exited with code 1: step 7 | RuntimeError: NCCL timeout"
    )
    assert ("event", "WorkerFailed") in kube.calls
    rec.cache.drop_pod(kube.objects.pop(("Pod", "llm-worker-0-r0")))  # the deleted worker goes
    reconcile(rec)  # generation 1 is created beside the kept pod of generation 0
    assert ("Pod", "llm-worker-1-r0") in kube.objects
    assert {("Pod", "llm-worker-0-r1"), ("Pod", "llm-worker-1-r1")} <= set(kube.objects)
    kwok(kube, rec, only="llm-worker-0-r1")
    kwok(kube, rec, only="llm-worker-1-r1")
    reconcile(rec)
    assert status(kube)["phase"] == "Running"

    kwok(kube, rec, phase="Failed", ready=False, only="llm-worker-0-r1", **exited(1))
    kube.calls.clear()
    reconcile(rec)
    deleted = sorted(w for verb, w in kube.calls if verb == "delete")
    assert deleted == ["Pod/llm-worker-1-r0", "Pod/llm-worker-1-r1"]
    assert status(kube)["restarts"] == 2


def test_every_checkpoint_rank_zero_reports_reaches_last_checkpoint():
    kube, rec = setup(checkpoint={"uri": "s3://ckpt/llm"})
    reconcile(rec)
    kwok(kube, rec)
    reconcile(rec)
    assert take(rec, KEY, 0, f"carina_checkpoint_last_step{{{LABELS}}} 200\n")
    reconcile(rec)
    assert status(kube)["lastCheckpoint"] == {
        "step": 200,
        "uri": "s3://ckpt/llm/step-00000200",
        "time": "2026-01-01T00:00:00Z",
    }
    # an older report never moves it back
    assert take(rec, KEY, 0, f"carina_checkpoint_last_step{{{LABELS}}} 100\n")
    reconcile(rec)
    assert status(kube)["lastCheckpoint"]["step"] == 200


# What rank 0's /metrics says, as the scraper hands it over (`take`); the HTTP part is
# tests/integration/processes/test_progress_scrape.py.
LABELS = 'job="llm",namespace="ns",rank="0"'


def metrics(step: int, total: int = 60, saved: int = 0, damaged: str = "") -> str:
    text = (
        f"carina_worker_step{{{LABELS}}} {step}\n"
        f"carina_worker_total_steps{{{LABELS}}} {total}\n"
        f"carina_worker_loss{{{LABELS}}} {5 / max(step, 1)}\n"
        f"carina_checkpoint_last_step{{{LABELS}}} {saved}\n"
    )
    if damaged:
        text += (
            f'carina_checkpoint_damaged{{{LABELS},step="{damaged}",'
            f'uri="s3://ckpt/llm/step-{int(damaged):08d}",file="model.safetensors",'
            'reason="size 10 bytes, the manifest says 4096"} 1\n'
        )
    return text


def running_gang(**spec: Any) -> tuple[FakeKube, Reconciler]:
    kube, rec = setup(checkpoint={"uri": "s3://ckpt/llm"}, **spec)
    rec.settings = Settings(status_min_interval=0)  # progress goes out at once
    reconcile(rec)
    kwok(kube, rec)
    reconcile(rec)
    assert status(kube)["phase"] == "Running"
    return kube, rec


def corrupt_events(kube: FakeKube) -> int:
    return kube.calls.count(("event", "CheckpointCorrupt"))


def test_a_damaged_checkpoint_rank_zero_reports_is_one_warning_on_the_operator_path():
    kube, rec = running_gang()
    take(rec, KEY, 0, metrics(25, saved=10, damaged="20"))
    reconcile(rec)
    assert corrupt_events(kube) == 1
    assert status(kube)["damagedCheckpoints"] == [
        {
            "step": 20,
            "uri": "s3://ckpt/llm/step-00000020",
            "file": "model.safetensors",
            "reason": "size 10 bytes, the manifest says 4096",
        }
    ]
    assert status(kube)["lastCheckpoint"]["step"] == 10
    take(rec, KEY, 0, metrics(26, saved=10, damaged="20"))
    reconcile(rec)
    assert corrupt_events(kube) == 1
    # A restarted operator knows it from status: no second warning.
    cache = Cache()
    for (kind, _), obj in kube.objects.items():
        if kind == "TrainingJob":
            cache.put_job(copy.deepcopy(obj))
        elif kind == "Pod":
            cache.put_pod(copy.deepcopy(obj))
    again = Reconciler(Settings(), kube, cache, WorkQueue(), clock=lambda: NOW)  # type: ignore[arg-type]
    take(again, KEY, 0, metrics(27, saved=10, damaged="20"))
    reconcile(again)
    assert corrupt_events(kube) == 1


def test_the_final_step_reaches_status_from_rank_zeros_termination_message():
    kube, rec = running_gang()
    take(rec, KEY, 0, metrics(55, saved=50))
    reconcile(rec)
    assert status(kube)["progress"]["step"] == 55
    # The endpoint is gone with the worker: its termination message has the last word.
    said = TerminationMessage(
        step=60,
        total_steps=60,
        loss=0.25,
        checkpoint_step=60,
        checkpoint_uri="s3://ckpt/llm/step-00000060",
    )
    kwok(kube, rec, "Succeeded", False, only="llm-worker-0-r0", **exited(0, said.to_text()))
    kwok(kube, rec, "Succeeded", False, only="llm-worker-1-r0", **exited(0))
    reconcile(rec)
    final = status(kube)
    assert final["phase"] == "Succeeded"
    assert (final["progress"]["step"], final["progress"]["totalSteps"]) == (60, 60)
    assert final["progress"]["loss"] == 0.25
    assert final["lastCheckpoint"]["step"] == 60


def test_a_restarted_gang_keeps_the_last_progress_until_its_rank_zero_reports():
    kube, rec = running_gang(failurePolicy={"backoffSeconds": 0})
    take(rec, KEY, 0, metrics(30, saved=20))
    reconcile(rec)
    kwok(kube, rec, phase="Failed", ready=False, only="llm-worker-1-r0", **exited(1))
    reconcile(rec)
    assert status(kube)["restarts"] == 1
    rec.cache.drop_pod(kube.objects.pop(("Pod", "llm-worker-0-r0")))
    reconcile(rec)
    kwok(kube, rec, only="llm-worker-0-r1")
    kwok(kube, rec, only="llm-worker-1-r1")
    reconcile(rec)
    assert status(kube)["phase"] == "Running"
    assert status(kube)["progress"]["step"] == 30
    take(rec, KEY, 1, metrics(0, saved=20))  # loading its checkpoint: no step of its own yet
    reconcile(rec)
    assert status(kube)["progress"]["step"] == 30
    take(rec, KEY, 1, metrics(21, saved=20))
    reconcile(rec)
    assert status(kube)["progress"]["step"] == 21


def test_normal_events_beyond_the_rate_are_shed_and_warnings_never_are():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    assert all(TokenBucket(rate=0, burst=1).take() for _ in range(100))

    kube, rec = setup()
    rec.settings = Settings(status_min_interval=0)
    rec._normal_events = TokenBucket(rate=1e-9, burst=1)
    reconcile(rec)  # Created: the one token
    kwok(kube, rec)
    reconcile(rec)  # Running: shed
    assert [c for c in kube.calls if c[0] == "event"] == [("event", "Created")]
    kwok(kube, rec, phase="Failed", ready=False, only="llm-worker-1-r0", **exited(1))
    reconcile(rec)
    assert ("event", "WorkerFailed") in kube.calls


def test_worker_counts_of_a_starting_gang_wait_the_longer_interval():
    kube, rec = setup(replicas=3)
    rec.settings = Settings(status_min_interval=0, starting_status_interval=3600)
    reconcile(rec)
    assert status(kube)["phase"] == "Starting"
    kube.calls.clear()
    kwok(kube, rec, only="llm-worker-0-r0")
    reconcile(rec)  # one of three running: only a count changed
    assert [c for c in kube.calls if c[0] == "patch"] == []
    kwok(kube, rec)
    reconcile(rec)  # all running: the phase changes, written at once
    assert status(kube)["phase"] == "Running"
