"""The lifecycle engine with the upstream gate: a pipeline's job waits, fails or starts."""

from __future__ import annotations

import json

from builders import make_job
from planning_fakes import T0, at

from carina.platform.api.types import Condition, JobInput, TrainingJob, TrainingJobStatus
from carina.platform.planning.actions import CreateWorkers, FailJob, Wait
from carina.platform.planning.dependencies import Gate
from carina.platform.planning.engine import plan
from carina.platform.planning.render import spec_text

RESOLVED = JobInput(
    field="spec.workload.finetune.base",
    job="pretrain",
    uri="s3://ckpt/pretrain/step-00000600",
    step=600,
)


def downstream() -> TrainingJob:
    manifest = make_job("finetune").with_spec(workload={"finetune": {"base": "job://pretrain"}})
    manifest["metadata"].update(namespace="ns", uid="u2", generation=1)
    return TrainingJob.parse(manifest)


def condition(status: TrainingJobStatus, type_: str) -> Condition:
    return next(c for c in status.conditions if c.type == type_)


def test_a_job_waiting_for_its_upstream_is_pending_with_no_workers() -> None:
    waiting = Gate("wait", "WaitingForUpstream", "waiting for job pretrain (Running, step 1/9)")
    decided = plan(downstream(), [], T0, upstream=waiting)
    assert decided.action == Wait(None)
    assert decided.status.phase == "Pending"
    admitted = condition(decided.status, "Admitted")
    assert (admitted.status, admitted.reason) == ("False", "WaitingForUpstream")
    assert admitted.message == "waiting for job pretrain (Running, step 1/9)"
    assert [(e.type, e.reason) for e in decided.events] == [("Normal", "WaitingForUpstream")]


def test_a_missing_upstream_is_a_warning_once_and_the_wait_goes_on() -> None:
    missing = Gate("wait", "UpstreamMissing", "job pretrain does not exist (yet)")
    first = plan(downstream(), [], T0, upstream=missing)
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "UpstreamMissing")]
    again = plan(
        downstream().model_copy(update={"status": first.status}), [], at(5), upstream=missing
    )
    assert again.events == ()
    assert again.status.phase == "Pending"


def test_the_waiting_reason_follows_the_upstreams_step_without_new_events() -> None:
    early = Gate("wait", "WaitingForUpstream", "waiting for job pretrain (Running, step 1/9)")
    later = Gate("wait", "WaitingForUpstream", "waiting for job pretrain (Running, step 8/9)")
    first = plan(downstream(), [], T0, upstream=early)
    job = downstream().model_copy(update={"status": first.status})
    decided = plan(job, [], at(5), upstream=later)
    assert condition(decided.status, "Admitted").message.endswith("step 8/9)")
    assert decided.events == ()


def test_a_failed_upstream_fails_the_job_naming_it() -> None:
    failed = Gate("fail", "UpstreamFailed", "upstream job pretrain failed: PermanentExitCode: ...")
    decided = plan(downstream(), [], T0, upstream=failed)
    assert isinstance(decided.action, FailJob)
    assert decided.status.phase == "Failed"
    cond = condition(decided.status, "Failed")
    assert (cond.reason, cond.message) == ("UpstreamFailed", failed.message)
    assert ("Warning", "UpstreamFailed") in [(e.type, e.reason) for e in decided.events]


def test_a_loop_of_dependencies_fails_the_job_naming_the_loop() -> None:
    loop = Gate("fail", "DependencyCycle", "... none of them can start: finetune -> a -> finetune")
    decided = plan(downstream(), [], T0, upstream=loop)
    assert decided.status.phase == "Failed"
    assert condition(decided.status, "Failed").message.endswith("finetune -> a -> finetune")


def test_a_clear_gate_records_the_inputs_and_the_workers_read_the_resolved_uri() -> None:
    decided = plan(downstream(), [], T0, upstream=Gate("clear", inputs=(RESOLVED,)))
    assert isinstance(decided.action, CreateWorkers)
    assert decided.status.inputs == [RESOLVED]
    planned = downstream().model_copy(update={"status": decided.status})
    spec = json.loads(spec_text(planned))
    assert spec["config"]["base"] == "s3://ckpt/pretrain/step-00000600"


def test_a_job_without_upstreams_plans_as_before() -> None:
    job = TrainingJob.parse(make_job("solo"))
    decided = plan(job, [], T0)
    assert isinstance(decided.action, CreateWorkers)
    assert decided.status.inputs is None


def test_time_spent_waiting_for_an_upstream_is_no_queue_wait() -> None:
    waiting = Gate("wait", "WaitingForUpstream", "waiting for job pretrain (Running)")
    first = plan(downstream(), [], T0, upstream=waiting)
    job = downstream().model_copy(update={"status": first.status})
    later = plan(job, [], at(600), upstream=Gate("clear", inputs=(RESOLVED,)))
    assert later.status.goodput is not None
    assert later.status.goodput.queue_wait_seconds == 0
