"""The upstream gate of a pipeline's jobs (planning/dependencies.py), table by table."""

from __future__ import annotations

from typing import Any

import pytest
from builders import make_job
from planning_fakes import T0

from carina.platform.api.types import (
    CheckpointStatus,
    Condition,
    JobInput,
    Progress,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.planning.dependencies import (
    UnresolvedReference,
    Upstream,
    find_cycle,
    gate,
    loops_among,
    references,
    resolved_config,
    upstream_names,
)
from carina.workloads.contract import ContractError, local_path

PRETRAIN_CKPT = CheckpointStatus(step=600, uri="s3://ckpt/pretrain/step-00000600")


def finetune(name: str = "finetune", base: str = "job://pretrain", **spec: Any) -> TrainingJob:
    manifest = make_job(name).with_spec(workload={"finetune": {"base": base}}, **spec)
    manifest["metadata"]["namespace"] = "ns"
    return TrainingJob.parse(manifest)


def evaluate(base: str, compare_to: str | None = None, **spec: Any) -> TrainingJob:
    config: dict[str, Any] = {
        "base": base,
        "tasks": [{"name": "ppl", "kind": "perplexity", "data": {"generator": "python-stdlib"}}],
    }
    if compare_to:
        config["compareTo"] = compare_to
    return TrainingJob.parse(make_job("evaluate").with_spec(workload={"evaluate": config}, **spec))


def done(ckpt: CheckpointStatus | None = PRETRAIN_CKPT) -> Upstream:
    return Upstream(phase="Succeeded", last_checkpoint=ckpt)


def running(step: int, total: int) -> Upstream:
    return Upstream(phase="Running", progress=Progress(step=step, total_steps=total))


FAILED = Upstream(phase="Failed", failure="PermanentExitCode: worker 0 exited with code 65")


# -- what a job names ---------------------------------------------------------------------------


def test_references_are_the_job_inputs_then_depends_on() -> None:
    job = evaluate("job://finetune", "job://pretrain", dependsOn=["quantize"])
    assert [(r.field, r.job, r.checkpoint) for r in references(job)] == [
        ("spec.workload.evaluate.base", "finetune", True),
        ("spec.workload.evaluate.compareTo", "pretrain", True),
        ("spec.dependsOn[0]", "quantize", False),
    ]


def test_a_uri_is_no_reference() -> None:
    assert references(finetune(base="s3://ckpt/base/step-00000010")) == ()


def test_upstream_names_read_the_wire_form_as_the_models_do() -> None:
    job = evaluate("job://finetune", "s3://ckpt/x", dependsOn=["quantize", "finetune"])
    assert upstream_names(job.spec.to_wire()) == {"finetune", "quantize"}
    assert upstream_names({"workload": {"pretrain": {"init": "job://a"}}}) == {"a"}
    assert upstream_names({"workload": "not a mapping", "dependsOn": [3]}) == frozenset()


# -- the gate -------------------------------------------------------------------------------------

# (case, upstreams by name, verdict, reason, words the message holds)
GATES: list[tuple[str, dict[str, Upstream], str, str, str]] = [
    ("upstream succeeded", {"pretrain": done()}, "clear", "", ""),
    (
        "upstream still running",
        {"pretrain": running(120, 600)},
        "wait",
        "WaitingForUpstream",
        "waiting for job pretrain (Running, step 120/600)",
    ),
    (
        "upstream queued",
        {"pretrain": Upstream(phase="Queued")},
        "wait",
        "WaitingForUpstream",
        "waiting for job pretrain (Queued)",
    ),
    (
        "no such upstream",
        {},
        "wait",
        "UpstreamMissing",
        "job pretrain does not exist (yet)",
    ),
    (
        "upstream failed",
        {"pretrain": FAILED},
        "fail",
        "UpstreamFailed",
        "upstream job pretrain failed: PermanentExitCode: worker 0 exited with code 65",
    ),
    (
        "upstream succeeded without a checkpoint",
        {"pretrain": done(None)},
        "fail",
        "UpstreamWithoutCheckpoint",
        "upstream job pretrain Succeeded without a checkpoint",
    ),
]


@pytest.mark.parametrize(
    ("upstreams", "verdict", "reason", "words"),
    [g[1:] for g in GATES],
    ids=[g[0] for g in GATES],
)
def test_gate_of_a_fine_tune_on_one_pretraining_job(
    upstreams: dict[str, Upstream], verdict: str, reason: str, words: str
) -> None:
    decided = gate(finetune(), upstreams.get)
    assert decided.verdict == verdict
    assert decided.reason == reason
    assert words in decided.message


def test_a_clear_gate_resolves_each_reference_to_the_upstreams_last_checkpoint() -> None:
    tuned = CheckpointStatus(step=120, uri="s3://ckpt/finetune/step-00000120")
    job = evaluate("job://finetune", "job://pretrain", dependsOn=["quantize"])
    others = {"finetune": done(tuned), "pretrain": done(), "quantize": done(None)}
    decided = gate(job, others.get)
    assert decided.clear
    assert decided.inputs == (
        JobInput(field="spec.workload.evaluate.base", job="finetune", uri=tuned.uri, step=120),
        JobInput(
            field="spec.workload.evaluate.compareTo",
            job="pretrain",
            uri=PRETRAIN_CKPT.uri,
            step=600,
        ),
        JobInput(field="spec.dependsOn[0]", job="quantize"),
    )


def test_a_failed_upstream_fails_the_job_even_while_another_runs() -> None:
    job = evaluate("job://finetune", "job://pretrain")
    decided = gate(job, {"finetune": running(3, 10), "pretrain": FAILED}.get)
    assert (decided.verdict, decided.reason) == ("fail", "UpstreamFailed")
    assert "pretrain" in decided.message


def test_the_first_unfinished_upstream_is_named_and_the_others_counted() -> None:
    job = evaluate("job://finetune", "job://pretrain", dependsOn=["quantize"])
    others = {"finetune": running(3, 10), "pretrain": running(5, 9), "quantize": done()}
    decided = gate(job, others.get)
    assert decided.message == "waiting for job finetune (Running, step 3/10); and 1 other job"


def test_recorded_inputs_are_fixed_once_the_job_is_past_the_gate() -> None:
    recorded = JobInput(field="spec.workload.finetune.base", job="pretrain", uri="s3://x", step=9)
    job = finetune()
    job.status = TrainingJobStatus(phase="Running", inputs=[recorded])
    # The upstream was deleted meanwhile: the running job neither waits nor re-resolves.
    decided = gate(job, {}.get)
    assert decided.clear
    assert decided.inputs == (recorded,)


def test_a_changed_reference_is_resolved_again() -> None:
    recorded = JobInput(field="spec.workload.finetune.base", job="old", uri="s3://x", step=9)
    job = finetune(base="job://pretrain")
    job.status = TrainingJobStatus(inputs=[recorded])
    assert gate(job, {}.get).reason == "UpstreamMissing"


def test_a_finished_job_is_never_held_again() -> None:
    failed = finetune()
    failed.status = TrainingJobStatus(
        phase="Failed",
        conditions=[
            Condition(
                type="Failed",
                status="True",
                reason="UpstreamFailed",
                last_transition_time=T0,
            )
        ],
    )
    assert gate(failed, {"pretrain": FAILED}.get).clear


def test_a_job_with_no_upstream_is_clear_without_a_lookup() -> None:
    def lookup(name: str) -> Upstream | None:
        raise AssertionError(f"looked up {name}")

    assert gate(finetune(base="s3://ckpt/base"), lookup).clear


# -- loops ----------------------------------------------------------------------------------------


def test_a_loop_through_unfinished_jobs_fails_every_job_in_it() -> None:
    # finetune -> pretrain -> finetune: neither can ever start.
    pretrain = Upstream(phase="Pending", upstreams=("finetune",))
    decided = gate(finetune(), {"pretrain": pretrain}.get)
    assert (decided.verdict, decided.reason) == ("fail", "DependencyCycle")
    assert decided.message.endswith("finetune -> pretrain -> finetune")


def test_a_job_of_a_loop_names_the_loop_even_after_another_of_it_failed() -> None:
    # The operator reconciles the loop's jobs in any order: pretrain may fail first.
    pretrain = Upstream(
        phase="Failed",
        upstreams=("finetune",),
        failure="DependencyCycle: the jobs' dependencies loop",
    )
    decided = gate(finetune(), {"pretrain": pretrain}.get)
    assert (decided.verdict, decided.reason) == ("fail", "DependencyCycle")
    assert decided.message.endswith("finetune -> pretrain -> finetune")


def test_a_loop_through_a_succeeded_job_holds_nobody_up() -> None:
    pretrain = Upstream(phase="Succeeded", last_checkpoint=PRETRAIN_CKPT, upstreams=("finetune",))
    assert gate(finetune(), {"pretrain": pretrain}.get).clear


def test_a_job_below_a_loop_waits_for_it_rather_than_failing() -> None:
    # a <-> b loop; finetune depends on a: a and b fail on their own, then finetune follows.
    others = {
        "pretrain": Upstream(phase="Pending", upstreams=("b",)),
        "b": Upstream(phase="Pending", upstreams=("pretrain",)),
    }
    assert gate(finetune(), others.get).reason == "WaitingForUpstream"


@pytest.mark.parametrize(
    ("edges", "start", "loop"),
    [
        ({"a": ["b"], "b": ["a"]}, "a", ("a", "b", "a")),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "b", ("b", "c", "a", "b")),
        ({"a": ["b", "c"], "b": ["d"], "c": ["a"], "d": []}, "a", ("a", "c", "a")),
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, "a", None),  # a loop below a, not through it
        ({"a": ["b"], "b": []}, "a", None),
    ],
)
def test_find_cycle_returns_the_loop_through_the_job(
    edges: dict[str, list[str]], start: str, loop: tuple[str, ...] | None
) -> None:
    assert find_cycle(start, lambda n: edges.get(n, [])) == loop


def test_loops_among_a_files_jobs_name_the_field_that_leads_into_the_loop() -> None:
    a = finetune("a", base="job://b")
    b = finetune("b", base="s3://ckpt/x", dependsOn=["c"])
    c = finetune("c", base="job://a")
    fine = finetune("d", base="job://a")
    loops = loops_among([a, b, c, fine])
    assert sorted(loops) == ["a", "b", "c"]
    ref, loop = loops["b"]
    assert (ref.field, loop) == ("spec.dependsOn[0]", ("b", "c", "a", "b"))


# -- what the worker reads ----------------------------------------------------------------------


def test_the_workers_config_carries_the_resolved_uri() -> None:
    job = evaluate("job://finetune", "s3://ckpt/baseline")
    job.status = TrainingJobStatus(
        inputs=[
            JobInput(field="spec.workload.evaluate.base", job="finetune", uri="s3://t/s", step=1)
        ]
    )
    config = resolved_config(job)
    assert (config["base"], config["compareTo"]) == ("s3://t/s", "s3://ckpt/baseline")


def test_an_unresolved_reference_never_reaches_a_worker() -> None:
    with pytest.raises(UnresolvedReference, match=r"spec\.workload\.finetune\.base"):
        resolved_config(finetune())


def test_a_worker_given_a_reference_all_the_same_refuses_it_in_words() -> None:
    with pytest.raises(ContractError, match="the platform resolves job:// references"):
        local_path("job://pretrain")
