"""From queueing decisions to a job's status and workers: admission, eviction, release.

The admission function's decisions are folded into `status.queueing`; the lifecycle engine
reads that sub-tree to start a gang only once admitted and to stop it, with a checkpoint
first, once evicted. These tests walk one job through that story.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from builders import make_job

from carina.platform.api.queues import CPU, GPU, ClusterQueue, LocalQueue
from carina.platform.api.types import CheckpointStatus, Phase, TrainingJob, TrainingJobStatus
from carina.platform.planning.actions import CreateWorkers, Nothing, SuspendWorkers, Wait
from carina.platform.planning.engine import plan
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.queue_view import (
    gang_usage,
    job_admission,
    job_info,
    next_queueing,
    priority_of,
    queue_info,
    resolve,
)
from carina.platform.planning.queueing import Held, JobInfo, schedule

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = 120.0


def cq(name: str = "team-a", gpus: int = 16, **spec: object) -> ClusterQueue:
    return ClusterQueue.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus}],
                "preemption": {"withinClusterQueue": "LowerPriority"},
                **spec,
            },
        }
    )


def lq(ns: str = "team-a", name: str = "default", cluster_queue: str = "team-a") -> LocalQueue:
    return LocalQueue.model_validate(
        {"metadata": {"name": name, "namespace": ns}, "spec": {"clusterQueue": cluster_queue}}
    )


def gpu_job(name: str = "llm", replicas: int = 2, gpus: int = 8, priority: int = 0) -> TrainingJob:
    manifest = dict(
        make_job(name).with_spec(
            replicas=replicas,
            cluster="vela",
            queue="default",
            priority=priority,
            resources={"gpus": gpus},
        )
    )
    manifest["metadata"].update(
        namespace="team-a", uid=f"uid-{name}", generation=1, creationTimestamp=T0.isoformat()
    )
    return TrainingJob.parse(manifest)


def worker(index: int, phase: str = "Running", ready: bool = True, **kw: object) -> ObservedWorker:
    return ObservedWorker(index=index, phase=phase, ready=ready, restart=0, **kw)  # type: ignore[arg-type]


def with_status(job: TrainingJob, status: TrainingJobStatus | None) -> TrainingJob:
    return job.model_copy(update={"status": status})


def decide(job: TrainingJob, others: list[JobInfo], now: datetime, gone: bool = True):
    info = job_info(
        job,
        "team-a/" + job.metadata.name,
        queue="team-a",
        priority=job.spec.priority,
        workers_gone=gone,
        covered={GPU},
    )
    decisions = schedule([queue_info(cq())], [info, *others], now.timestamp())
    q = next_queueing(
        job,
        info.key,
        decisions,
        now,
        local_queue="default",
        cluster_queue="team-a",
        priority=info.priority,
        grace_seconds=GRACE,
    )
    status = (job.status or TrainingJobStatus()).model_copy(update={"queueing": q})
    return with_status(job, status), decisions


def test_a_gang_counts_every_worker_and_gpu() -> None:
    usage = gang_usage(gpu_job(replicas=4, gpus=8))
    assert usage[GPU] == 32
    assert usage["pods"] == 4
    assert usage[CPU] == 4


def test_the_queue_resolves_through_the_local_queue_and_the_namespace_selector() -> None:
    job = gpu_job()
    assert resolve(job, {("team-a", "default"): lq()}, {"team-a": cq()}, {}) == (
        "team-a",
        None,
        False,
    )
    _, wrong, _ = resolve(job, {}, {"team-a": cq()}, {})
    assert wrong == "LocalQueue team-a/default does not exist"
    _, wrong, _ = resolve(job, {("team-a", "default"): lq(cluster_queue="gone")}, {}, {})
    assert "ClusterQueue gone" in (wrong or "")
    picky = cq(namespaceSelector={"matchLabels": {"team": "a"}})
    _, wrong, _ = resolve(job, {("team-a", "default"): lq()}, {"team-a": picky}, {"team-a": {}})
    assert wrong == "ClusterQueue team-a does not admit jobs of namespace team-a"
    assert (
        resolve(job, {("team-a", "default"): lq()}, {"team-a": picky}, {"team-a": {"team": "a"}})[0]
        == "team-a"
    )


def test_a_priority_class_sets_the_priority_and_a_missing_one_is_named() -> None:
    job = gpu_job()
    named = job.model_copy(
        update={"spec": job.spec.model_copy(update={"priority_class_name": "prod"})}
    )
    assert priority_of(named, {"prod": 1000}) == (1000, None)
    assert priority_of(named, {}) == (0, "TrainingPriorityClass prod does not exist")


def test_a_managed_job_has_no_workers_before_its_first_admission() -> None:
    job = gpu_job()
    decided = plan(job, [], T0, job_admission(job, managed=True))
    assert not isinstance(decided.action, CreateWorkers)
    assert decided.status.phase == Phase.QUEUED
    admitted = next(c for c in decided.status.conditions if c.type == "Admitted")
    assert (admitted.status, admitted.reason) == ("False", "PendingEvaluation")


def test_preempted_victim_saves_a_checkpoint_leaves_then_resumes() -> None:
    # Admitted: the gang is created, all of it.
    job, d = decide(gpu_job(priority=0), [], T0)
    assert job.status is not None
    assert job.status.queueing is not None
    assert job.status.queueing.admission is not None
    assert job.status.queueing.reason == "QuotaReserved"
    step = plan(job, [], T0, job_admission(job, True))
    assert step.action == CreateWorkers((0, 1), 0)
    job = with_status(job, step.status)

    # A higher-priority job needs the quota: the victim is evicted.
    t1 = T0 + timedelta(minutes=10)
    boss = JobInfo("team-a/boss", "team-a", {GPU: 16.0}, priority=100, timestamp=t1.timestamp())
    running = [worker(0), worker(1)]
    job, d = decide(job, [boss], t1, gone=False)
    assert d.evict["team-a/llm"].preemptor == "team-a/boss"
    assert d.pending["team-a/boss"].reason == "WaitingForPreemptedWorkloads"
    q = job.status.queueing  # type: ignore[union-attr]
    assert q is not None
    assert q.eviction is not None
    assert q.eviction.deadline == t1 + timedelta(seconds=GRACE)
    assert {c.type: c.reason for c in q.conditions}["Preempted"] == "InClusterQueue"
    step = plan(job, running, t1, job_admission(job, True))
    assert isinstance(step.action, SuspendWorkers)  # every rank gets SIGTERM at once
    assert step.status.phase == Phase.QUEUED
    assert [(e.type, e.reason) for e in step.events] == [("Warning", "Preempted")]
    job = with_status(job, step.status)

    # Rank 0 acknowledges the checkpoint in its termination message; the workers are gone.
    t2 = t1 + timedelta(seconds=30)
    ack = json.dumps({"checkpoint": {"step": 420, "uri": "s3://ckpt/llm/step-00000420"}})
    leaving = [
        worker(0, "Failed", False, exit_code=75, termination_message=ack, finished_at=t2),
        worker(1, "Failed", False, exit_code=75, finished_at=t2),
    ]
    step = plan(job, leaving, t2, job_admission(job, True))
    assert isinstance(step.action, SuspendWorkers)  # the finished pods are deleted too
    assert step.status.last_checkpoint == CheckpointStatus(
        step=420, uri="s3://ckpt/llm/step-00000420", time=t2
    )
    checkpointed = next(c for c in step.status.conditions if c.type == "Checkpointed")
    assert (checkpointed.status, checkpointed.reason) == ("True", "CheckpointSaved")
    assert ("Normal", "CheckpointSaved") in [(e.type, e.reason) for e in step.events]
    job = with_status(job, step.status)

    # Its workers gone, the quota is released and it waits again, ahead of later jobs.
    t3 = t2 + timedelta(seconds=5)
    boss_waiting = JobInfo(
        "team-a/boss", "team-a", {GPU: 16.0}, priority=100, timestamp=t1.timestamp()
    )
    job, d = decide(job, [boss_waiting], t3, gone=True)
    assert "team-a/llm" in d.release
    assert "team-a/boss" in d.admit
    q = job.status.queueing  # type: ignore[union-attr]
    assert q is not None
    assert q.admission is None
    assert q.eviction is None
    assert q.reason == "WaitingForQuota"
    step = plan(job, [], t3, job_admission(job, True))
    assert isinstance(step.action, (Wait, Nothing))
    assert step.status.phase == Phase.QUEUED
    job = with_status(job, step.status)

    # The preemptor finishes; the victim is admitted again and resumes from step 420.
    t4 = t3 + timedelta(hours=1)
    job, d = decide(job, [], t4)
    assert "team-a/llm" in d.admit
    step = plan(job, [], t4, job_admission(job, True))
    assert isinstance(step.action, CreateWorkers)
    assert step.status.last_checkpoint is not None
    assert step.status.last_checkpoint.step == 420


def test_a_victim_killed_before_it_saved_says_how_many_steps_it_redoes() -> None:
    job, _ = decide(gpu_job(), [], T0)
    job = with_status(job, plan(job, [], T0, job_admission(job, True)).status)
    status = job.status.model_copy(deep=True)  # type: ignore[union-attr]
    status.last_checkpoint = CheckpointStatus(step=300, uri="s3://c/step-00000300", time=T0)
    status.progress = status.progress or None
    from carina.platform.api.types import Progress

    status.progress = Progress(step=380, total_steps=1000)
    job = with_status(job, status)
    t1 = T0 + timedelta(minutes=5)
    boss = JobInfo("team-a/boss", "team-a", {GPU: 16.0}, priority=100, timestamp=t1.timestamp())
    job, _ = decide(job, [boss], t1, gone=False)
    killed = [worker(0, "Failed", False, exit_code=137), worker(1, "Failed", False, exit_code=137)]
    killed = [w.__class__(**{**w.__dict__, "deleting": True}) for w in killed]
    step = plan(job, killed, t1 + timedelta(seconds=GRACE + 1), job_admission(job, True))
    assert isinstance(step.action, Nothing)
    cond = next(c for c in step.status.conditions if c.type == "Checkpointed")
    assert (cond.status, cond.reason) == ("False", "GracePeriodExceeded")
    assert "resumes from step 300 and redoes 80 steps" in cond.message


def test_usage_is_rebuilt_from_status_so_a_restart_does_not_admit_twice() -> None:
    job, d = decide(gpu_job(), [], T0)
    assert "team-a/llm" in d.admit
    # A new writer (an operator restarted) reads the same status: the job already holds.
    again = job_info(
        job, "team-a/llm", queue="team-a", priority=0, workers_gone=False, covered={GPU}
    )
    assert again.held == Held("team-a", {GPU: 16.0}, T0.timestamp(), False)
    other = JobInfo("team-a/other", "team-a", {GPU: 8.0}, timestamp=T0.timestamp() + 1)
    d2 = schedule([queue_info(cq())], [again, other], (T0 + timedelta(seconds=2)).timestamp())
    assert "team-a/llm" not in d2.admit
    assert d2.pending["team-a/other"].reason == "WaitingForQuota"


def test_a_waiting_job_is_told_when_it_should_start() -> None:
    from carina.platform.api.types import Progress
    from carina.platform.planning.queue_view import estimate_starts, eta

    # A running job halfway through 1,000 steps after an hour finishes in another hour.
    running = gpu_job("running")
    status = TrainingJobStatus(
        start_time=T0,
        progress=Progress(step=500, total_steps=1000, updated_at=T0 + timedelta(hours=1)),
    )
    running = with_status(running, status)
    assert eta(running) == T0 + timedelta(hours=2)
    queue = queue_info(cq())
    held = JobInfo(
        "team-a/running", "team-a", {GPU: 16.0}, held=Held("team-a", {GPU: 16.0}, T0.timestamp())
    )
    first = JobInfo("team-a/first", "team-a", {GPU: 8.0}, timestamp=1)
    second = JobInfo("team-a/second", "team-a", {GPU: 16.0}, timestamp=2)
    now = T0 + timedelta(hours=1)
    d = schedule([queue], [held, first, second], now.timestamp())
    assert d.pending["team-a/first"].reason == "WaitingForQuota"
    starts = estimate_starts(
        [queue], [held, first, second], d, {"team-a/running": T0 + timedelta(hours=2)}, now
    )
    assert starts["team-a/first"] == T0 + timedelta(hours=2)
    assert "team-a/second" not in starts  # behind "first", with no end in sight


def test_a_blue_vela_gang_counts_its_rdma_devices_as_its_pods_request_them() -> None:
    from carina.platform.api.queues import RDMA
    from carina.platform.planning.profiles import profile_for
    from carina.platform.planning.render import RenderSettings, build_worker_pod

    job = gpu_job(replicas=4)
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"cluster": "blue-vela"})})
    pod = build_worker_pod(job, 0, 0, RenderSettings())
    requested = pod["spec"]["containers"][0]["resources"]["requests"]
    assert RDMA in requested  # the name the quota counts is the name a pod asks for
    assert profile_for("blue-vela").extra_resources[RDMA] == requested[RDMA]
    assert gang_usage(job)[RDMA] == 4 * float(requested[RDMA])
    # A GPU-only queue does not limit the RDMA devices it names no quota for.
    info = job_info(job, "team-a/llm", queue="team-a", priority=0, workers_gone=True, covered={GPU})
    assert RDMA not in info.demand
