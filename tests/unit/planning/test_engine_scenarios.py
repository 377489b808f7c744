"""The scenario table (tests/scenarios.py) run against the engine and against both substrates.

Each scenario is a manifest and what its workers do over time; every step gives the phase,
the conditions (type, status, reason) and the events (type, reason) a person would see. Here
the table runs through `planning.engine.plan` alone, through the embedded substrate (a real
SQLite store, scripted worker processes) and through the operator's reconciler (an in-memory
API, scripted pods): all three must give the same answers, step for step.
tests/integration/test_scenarios_on_cluster.py plays the same table through the operator on
a real API server, its workers real pods.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scenarios import (
    SCENARIOS,
    T0,
    Script,
    decisive,
    job_manifest,
    observed,
    play,
    pod_status,
    seen,
    states_in_table,
    worker,
)

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
from carina.platform.planning.observed import (
    INDEX_LABEL,
    RESTART_LABEL,
    ObservedWorker,
    observe_pod,
)


def manifest(spec: dict[str, Any]) -> dict[str, Any]:
    """The scenario's job as an API server would have stored it."""
    body = job_manifest(spec)
    body["metadata"].update(
        namespace="ns", uid="job-uid", generation=1, creationTimestamp="2026-01-01T00:00:00Z"
    )
    return body


# ---------------------------------------------------------------- three runners


class EngineRun:
    """The engine alone: its status fed back each step."""

    def __init__(self, spec: dict[str, Any], tmp_path: Path) -> None:
        self.body = manifest(spec)
        self.status: TrainingJobStatus | None = None

    def step(self, script: Script, generation: int, now: datetime, spec: dict[str, Any]):
        workers = observed(script, generation, now)
        self.body["spec"].update(spec)
        job = TrainingJob.parse(self.body).model_copy(update={"status": self.status})
        decided = plan(job, workers, now)
        self.status = decided.status
        return seen(decided.status), [(e.type, str(e.reason)) for e in decided.events]

    def restarts(self) -> int:
        return self.status.restarts if self.status else 0


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
        self.substrate._observe = lambda uid, paths: (list(self.workers), None)  # type: ignore[method-assign]

    def step(self, script: Script, generation: int, now: datetime, spec: dict[str, Any]):
        workers = observed(script, generation, now)
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

    def restarts(self) -> int:
        row = self.store.get_job("ns", "llm")
        assert row is not None
        return int(json.loads(row.status).get("restarts", 0))


class _Api:
    """An in-memory API server for the reconciler: the job, its status, the events."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.job = body
        self.job["metadata"]["resourceVersion"] = "1"
        self.events: list[tuple[str, str]] = []

    async def create(self, manifest):
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

    def step(self, script: Script, generation: int, now: datetime, spec: dict[str, Any]):
        workers = observed(script, generation, now)
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

    def restarts(self) -> int:
        return int((self.api.job.get("status") or {}).get("restarts", 0))


RUNNERS = {"engine": EngineRun, "embedded": EmbeddedRun, "operator": OperatorRun}


@pytest.mark.parametrize("substrate", sorted(RUNNERS))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_substrate_tells_the_same_story(substrate: str, scenario: str, tmp_path: Path):
    spec, _ = SCENARIOS[scenario]
    play(scenario, RUNNERS[substrate](spec, tmp_path), substrate)


@pytest.mark.parametrize("state", states_in_table())
def test_the_pod_the_cluster_runner_writes_is_observed_as_the_scripted_worker(state: str):
    """The integration runner scripts workers as pod statuses: they must read as the workers
    the runners here are given, or the table would test different things on a cluster."""
    now = T0 + timedelta(seconds=30)
    pod = {
        "metadata": {"labels": {INDEX_LABEL: "1", RESTART_LABEL: "2"}},
        "spec": {"nodeName": "n"},
        "status": pod_status(state, "worker", "carina/worker:test", now),
    }
    assert decisive(observe_pod(pod)) == decisive(worker(1, 2, state, now))
