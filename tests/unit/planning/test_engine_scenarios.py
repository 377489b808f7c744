"""One table of lifecycle scenarios, run against the engine and against both substrates.

Each scenario is a manifest and what its workers do over time; every step gives the phase,
the conditions (type, status, reason) and the events (type, reason) a person would see. The
same table runs through `planning.engine.plan` alone, through the embedded substrate (a real
SQLite store, scripted worker processes) and through the operator's reconciler (an in-memory
API, scripted pods): all three must give the same answers, step for step.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import make_job

from carina.operators.runtime.cache import Cache, PodRecord
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.reconcile import Reconciler
from carina.platform.api.types import TrainingJob, TrainingJobStatus
from carina.platform.embedded.launcher import Launcher
from carina.platform.embedded.store import Store, WorkerRow
from carina.platform.embedded.substrate import Substrate, SubstrateConfig
from carina.platform.planning.admission import Capacity
from carina.platform.planning.engine import plan
from carina.platform.planning.observed import ObservedWorker

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# What one worker does at one step: "pending", "running", "ok" (exit 0), "exit:<code>",
# "lost" (its node is gone), "preempted" (exit 75 after a checkpoint).
Script = Callable[[int, int], str]  # (index, generation) -> state


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


def observed(script: Script, replicas: int, generation: int, now: datetime) -> list[ObservedWorker]:
    out = []
    for i in range(replicas):
        for g in range(generation + 1):
            state = script(i, g)
            if state in ("none", "gone"):
                continue
            out.append(_worker(i, g, state, now))
    return out


def _worker(index: int, generation: int, state: str, now: datetime) -> ObservedWorker:
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


def manifest(spec: dict[str, Any]) -> dict[str, Any]:
    body = dict(make_job("llm").with_replicas(2).with_spec(**spec))
    body["metadata"].update(
        namespace="ns", uid="job-uid", generation=1, creationTimestamp="2026-01-01T00:00:00Z"
    )
    return body


def seen(status: TrainingJobStatus) -> tuple[str, dict[str, tuple[str, str]]]:
    return str(status.phase), {c.type: (c.status, c.reason) for c in status.conditions}


# ---------------------------------------------------------------- three runners


class EngineRun:
    """The engine alone: its status fed back each step."""

    def __init__(self, spec: dict[str, Any], tmp_path: Path) -> None:
        self.body = manifest(spec)
        self.status: TrainingJobStatus | None = None

    def step(self, workers: list[ObservedWorker], now: datetime, spec: dict[str, Any]):
        self.body["spec"].update(spec)
        job = TrainingJob.parse(self.body).model_copy(update={"status": self.status})
        decided = plan(job, workers, now)
        self.status = decided.status
        return seen(decided.status), [(e.type, str(e.reason)) for e in decided.events]


class _NoProcesses(Launcher):
    """Starts nothing: the scenario says what the workers do."""

    def __init__(self) -> None:
        super().__init__(["true"])

    def start(self, uid, index, restart, env, paths):  # type: ignore[override]
        return WorkerRow(uid, index, restart, 0, "", 0.0, False, str(paths.root))

    def alive(self, worker):  # type: ignore[override]
        return False

    def signal(self, worker, sig):  # type: ignore[override]
        pass


class EmbeddedRun:
    """The embedded substrate: a real store; workers observed as the script says."""

    def __init__(self, spec: dict[str, Any], tmp_path: Path) -> None:
        self.store = Store(tmp_path / "carina.db")
        config = SubstrateConfig(state_dir=tmp_path, capacity=Capacity(cpus=64, memory_bytes=2**40))
        self.substrate = Substrate(self.store, _NoProcesses(), config)
        body = manifest(spec)
        self.row = self.store.create_job("ns", {k: body[k] for k in ("metadata", "spec")}, 0.0)
        self.workers: list[ObservedWorker] = []
        self.substrate._observe = lambda uid, paths: list(self.workers)  # type: ignore[method-assign]

    def step(self, workers: list[ObservedWorker], now: datetime, spec: dict[str, Any]):
        if spec:
            self.store.update_spec("ns", "llm", spec)
        row = self.store.get_job("ns", "llm")
        assert row is not None
        self.workers = workers
        before = len(self.store.events(row.uid))
        self.substrate.reconcile(row, now)
        row = self.store.get_job("ns", "llm")
        assert row is not None
        status = TrainingJobStatus.model_validate(json.loads(row.status))
        events = [(e.type, str(e.reason)) for e in self.store.events(row.uid)[before:]]
        return seen(status), events


class _Api:
    """An in-memory API server for the reconciler: the job, its status, the events."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.job = body
        self.job["metadata"]["resourceVersion"] = "1"
        self.events: list[tuple[str, str]] = []

    async def create(self, manifest):
        return None

    async def replace_configmap_data(self, manifest):
        return None

    async def delete_pod(self, namespace, name, uid, grace_seconds=None):
        return None

    async def delete_job(self, namespace, name, uid):
        return None

    async def patch_job_status(self, namespace, name, resource_version, patch):
        status = self.job.setdefault("status", {})
        for k, v in patch.items():
            if v is None:
                status.pop(k, None)
            elif isinstance(v, dict) and isinstance(status.get(k), dict):
                merged = {**status[k], **v}
                status[k] = {a: b for a, b in merged.items() if b is not None}
            else:
                status[k] = v
        rv = int(self.job["metadata"]["resourceVersion"]) + 1
        self.job["metadata"]["resourceVersion"] = str(rv)
        return copy.deepcopy(self.job)

    async def post_event(self, job, type_, reason, message):
        self.events.append((type_, reason))


class OperatorRun:
    """The operator's reconciler: an in-memory API; pods observed as the script says."""

    def __init__(self, spec: dict[str, Any], tmp_path: Path) -> None:
        self.api = _Api(manifest(spec))
        self.cache = Cache()
        self.cache.put_job(copy.deepcopy(self.api.job))
        settings = Settings(status_min_interval=0)
        self.clock = T0
        self.rec = Reconciler(
            settings,
            self.api,  # type: ignore[arg-type]
            self.cache,
            WorkQueue(),
            clock=lambda: self.clock,
        )
        self.workers: list[ObservedWorker] = []
        self.cache.records = lambda key: [  # type: ignore[method-assign]
            PodRecord(f"llm-worker-{w.index}-r{w.restart}", f"u{w.index}", 1, None, w)
            for w in self.workers
        ]

    def step(self, workers: list[ObservedWorker], now: datetime, spec: dict[str, Any]):
        if spec:
            self.api.job["spec"].update(spec)
            meta = self.api.job["metadata"]
            meta["generation"] += 1
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            self.cache.put_job(copy.deepcopy(self.api.job))
        self.workers, self.clock = workers, now
        before = len(self.api.events)

        async def once() -> None:
            await self.rec.reconcile(("ns", "llm"))
            await asyncio.gather(*self.rec._background)

        asyncio.run(once())
        status = TrainingJobStatus.model_validate(self.api.job.get("status") or {})
        return seen(status), self.api.events[before:]


RUNNERS = {"engine": EngineRun, "embedded": EmbeddedRun, "operator": OperatorRun}


def _generation(runner: Any) -> int:
    if isinstance(runner, EngineRun):
        return runner.status.restarts if runner.status else 0
    if isinstance(runner, EmbeddedRun):
        row = runner.store.get_job("ns", "llm")
        return int(json.loads(row.status).get("restarts", 0))
    return int((runner.api.job.get("status") or {}).get("restarts", 0))


@pytest.mark.parametrize("substrate", sorted(RUNNERS))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_substrate_tells_the_same_story(substrate: str, scenario: str, tmp_path: Path):
    spec, steps = SCENARIOS[scenario]
    runner = RUNNERS[substrate](spec, tmp_path)
    generation = 0
    for n, step in enumerate(steps):
        now = T0 + timedelta(seconds=10 * (n + 1))
        workers = observed(step.workers, 2, generation, now)
        (phase, conditions), events = runner.step(workers, now, step.spec)
        where = f"{scenario}, step {n + 1} ({substrate})"
        assert phase == step.phase, where
        for type_, expected in step.conditions.items():
            assert conditions.get(type_) == expected, f"{where}: {type_} {conditions}"
        assert events == step.events, where
        generation = _generation(runner)
