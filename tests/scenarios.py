"""One table of lifecycle scenarios, told alike by every runner of a TrainingJob.

Each scenario is a spec change to a 2-worker job and what its workers do over time; every
step gives the phase, the conditions (type, status, reason) and the events (type, reason) a
person would see. The table is played (`play`) by:

- tests/unit/planning/test_engine_scenarios.py: the engine alone, the embedded substrate (a
  real SQLite store, scripted worker processes) and the operator's reconciler (an in-memory
  API): the workers are `observed()` directly;
- tests/integration/test_scenarios_on_cluster.py: the operator's reconciler on a real
  kube-apiserver, its cache fed by watches: each worker is a pod whose status is written as
  a kubelet would (`pod_status`).

All must give the same answers, step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from builders import make_job

from carina.platform.api.types import TrainingJobStatus
from carina.platform.planning.observed import ObservedWorker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB = "llm"
REPLICAS = 2

# What one worker does at one step: "none" (no such worker yet), "gone" (an older generation's
# worker that is no longer there, or is kept finished), "pending", "running", "ok" (exit 0),
# "exit:<code>", "lost" (its node is gone).
Script = Callable[[int, int], str]  # (index, generation) -> state
ABSENT = ("none", "gone")


@dataclass(frozen=True)
class Step:
    workers: Script
    phase: str
    conditions: dict[str, tuple[str, str]]  # type -> (status, reason); only those listed
    events: list[tuple[str, str]]  # (type, reason), in order
    spec: dict[str, Any] = field(default_factory=dict)  # spec changes before this step


def every(state: str) -> Script:
    return lambda index, generation: state


def gen(first: str, later: str, index: int | None = None) -> Script:
    """`first` in generation 0 (for worker `index`, or all), `later` afterwards."""

    def script(i: int, generation: int) -> str:
        if generation == 0 and (index is None or i == index):
            return first
        return later if generation > 0 else "running"

    return script


SCENARIOS: dict[str, tuple[dict[str, Any], list[Step]]] = {
    "a gang starts, runs and succeeds": (
        {},
        [
            Step(
                every("none"),
                "Starting",
                {"Admitted": ("True", "Created")},
                [("Normal", "Created")],
            ),
            Step(every("pending"), "Starting", {"WorkersReady": ("False", "WorkersPending")}, []),
            Step(
                every("running"),
                "Running",
                {"Running": ("True", "WorkersRunning")},
                [("Normal", "WorkersRunning")],
            ),
            Step(
                every("ok"),
                "Succeeded",
                {"Succeeded": ("True", "Succeeded"), "Running": ("False", "Succeeded")},
                [("Normal", "Succeeded")],
            ),
        ],
    ),
    "a crash restarts the gang, which then succeeds": (
        {"failurePolicy": {"backoffSeconds": 0}},
        [
            Step(every("none"), "Starting", {}, [("Normal", "Created")]),
            Step(every("running"), "Running", {}, [("Normal", "WorkersRunning")]),
            Step(
                gen("exit:1", "none", index=1),
                "Restarting",
                {"Restarting": ("True", "WorkerFailed")},
                [("Warning", "WorkerFailed")],
            ),
            Step(gen("gone", "none"), "Restarting", {}, [("Normal", "Created")]),
            Step(
                gen("gone", "running"),
                "Running",
                {"Restarting": ("False", "WorkersRunning")},
                [("Normal", "WorkersRunning")],
            ),
            Step(gen("gone", "ok"), "Succeeded", {}, [("Normal", "Succeeded")]),
        ],
    ),
    "a permanent exit code fails the job at once": (
        {},
        [
            Step(every("none"), "Starting", {}, [("Normal", "Created")]),
            Step(every("running"), "Running", {}, [("Normal", "WorkersRunning")]),
            Step(
                gen("exit:65", "none", index=0),
                "Failed",
                {
                    "Failed": ("True", "PermanentExitCode"),
                    "Running": ("False", "PermanentExitCode"),
                },
                [("Warning", "PermanentExitCode")],
            ),
        ],
    ),
    "a lost node is an infrastructure restart": (
        {"failurePolicy": {"maxRestarts": 0}},
        [
            Step(every("none"), "Starting", {}, [("Normal", "Created")]),
            Step(every("running"), "Running", {}, [("Normal", "WorkersRunning")]),
            Step(
                gen("lost", "none", index=0),
                "Restarting",
                {"Restarting": ("True", "NodeFailure")},
                [("Warning", "NodeFailure")],
            ),
        ],
    ),
    "application restarts stop at maxRestarts": (
        {"failurePolicy": {"maxRestarts": 0}},
        [
            Step(every("none"), "Starting", {}, [("Normal", "Created")]),
            Step(every("running"), "Running", {}, [("Normal", "WorkersRunning")]),
            Step(
                gen("exit:1", "none", index=1),
                "Failed",
                {"Failed": ("True", "MaxRestartsExceeded")},
                [("Warning", "MaxRestartsExceeded")],
            ),
        ],
    ),
    "suspend stops the gang and resume starts it again": (
        {},
        [
            Step(every("none"), "Starting", {}, [("Normal", "Created")]),
            Step(every("running"), "Running", {}, [("Normal", "WorkersRunning")]),
            Step(
                every("running"),
                "Suspended",
                {"Suspended": ("True", "Suspended"), "Running": ("False", "Suspended")},
                [("Normal", "Suspended")],
                spec={"suspend": True},
            ),
            Step(
                every("none"),
                "Starting",
                {"Suspended": ("False", "Resumed")},
                [("Normal", "Created"), ("Normal", "Resumed")],
                spec={"suspend": False},
            ),
        ],
    ),
}


def job_manifest(spec: dict[str, Any]) -> dict[str, Any]:
    """The scenario's TrainingJob (no namespace): 2 workers, the scenario's spec on top."""
    return dict(make_job(JOB).with_replicas(REPLICAS).with_spec(**spec))


# ---------------------------------------------------------------- what the workers are


def scripted(script: Script, generation: int) -> Iterator[tuple[int, int, str]]:
    """(index, generation, state) of every worker the script places, generation 0 onwards."""
    for index in range(REPLICAS):
        for g in range(generation + 1):
            yield index, g, script(index, g)


def observed(script: Script, generation: int, now: datetime) -> list[ObservedWorker]:
    """The workers a substrate observes at this step (the in-memory runners' input)."""
    return [
        worker(i, g, state, now)
        for i, g, state in scripted(script, generation)
        if state not in ABSENT
    ]


def worker(index: int, generation: int, state: str, now: datetime) -> ObservedWorker:
    base = ObservedWorker(
        index=index, phase="Running", ready=True, restart=generation, node="n", started_at=T0
    )
    if state == "pending":
        return replace(base, phase="Pending", ready=False)
    if state == "running":
        return base
    if state == "ok":
        return replace(base, phase="Succeeded", ready=False, exit_code=0, finished_at=now)
    if state == "lost":
        return replace(base, phase="Failed", ready=False, reason="NodeLost")
    code = int(state.split(":")[1])
    return replace(base, phase="Failed", ready=False, exit_code=code, finished_at=now)


def decisive(w: ObservedWorker) -> tuple[Any, ...]:
    """What the lifecycle engine decides by (it reads started_at, node and the rest nowhere)."""
    return (w.index, w.restart, w.phase, w.ready, w.exit_code, w.reason, w.deleting)


def states_in_table() -> list[str]:
    """Every worker state some step of the table uses (each needs a `pod_status`)."""
    return sorted(
        {
            state
            for _, steps in SCENARIOS.values()
            for step in steps
            for _, _, state in scripted(step.workers, 2)
            if state not in ABSENT
        }
    )


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(state: str, container: str, image: str, now: datetime) -> dict[str, Any]:
    """The status a kubelet (or, for "lost", the taint manager) writes for a worker in `state`.

    `observe_pod` of a pod with this status is `worker(...)` of the same state, as far as the
    engine looks (`decisive`; a unit test keeps the two in agreement).
    """
    started = _iso(T0)

    def status(
        phase: str, ready: bool, container_state: dict[str, Any], *extra: dict[str, str]
    ) -> dict[str, Any]:
        flag = "True" if ready else "False"
        return {
            "phase": phase,
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": flag},
                {"type": "Ready", "status": flag},
                *extra,
            ],
            "containerStatuses": [
                {
                    "name": container,
                    "image": image,
                    "imageID": "",
                    "ready": ready,
                    "started": "running" in container_state,
                    "restartCount": 0,
                    "state": container_state,
                }
            ],
        }

    running = {"running": {"startedAt": started}}
    if state == "pending":
        return status("Pending", False, {"waiting": {"reason": "ContainerCreating"}})
    if state == "running":
        return status("Running", True, running)
    if state == "lost":
        # The node stopped reporting: its last word was "running"; the taint manager marks
        # the pod as disrupted (Kubernetes >= 1.26), and pod GC fails it.
        gone = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
        }
        return status("Failed", False, running, gone)
    if state == "ok" or state.startswith("exit:"):
        code = 0 if state == "ok" else int(state.split(":")[1])
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": _iso(now),
        }
        return status("Succeeded" if code == 0 else "Failed", False, {"terminated": terminated})
    raise ValueError(f"no pod status for worker state {state!r}")


# ---------------------------------------------------------------- playing the table


def seen(status: TrainingJobStatus) -> tuple[str, dict[str, tuple[str, str]]]:
    return str(status.phase), {c.type: (c.status, c.reason) for c in status.conditions}


Outcome = tuple[tuple[str, dict[str, tuple[str, str]]], list[tuple[str, str]]]


class Runner(Protocol):
    def step(self, script: Script, generation: int, now: datetime, spec: dict[str, Any]) -> Outcome:
        """Change the spec, make the workers what `script` says, reconcile once: what is seen."""

    def restarts(self) -> int:
        """status.restarts as last written: the generation the next step's script speaks of."""


def play(scenario: str, runner: Runner, substrate: str) -> None:
    """Every step of `scenario` through `runner`: phase, listed conditions and events as told."""
    _, steps = SCENARIOS[scenario]
    generation = 0
    for n, step in enumerate(steps):
        now = T0 + timedelta(seconds=10 * (n + 1))
        (phase, conditions), events = runner.step(step.workers, generation, now, step.spec)
        where = f"{scenario}, step {n + 1} ({substrate})"
        # (This module is no test module: pytest does not rewrite its asserts, so each
        # message says what was seen.)
        assert phase == step.phase, f"{where}: phase {phase}, expected {step.phase}"
        for type_, expected in step.conditions.items():
            assert conditions.get(type_) == expected, f"{where}: {type_} {conditions}"
        assert events == step.events, f"{where}: events {events}, expected {step.events}"
        generation = runner.restarts()
