"""Shared fake data for planning tests: jobs, workers and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.planning.observed import ObservedWorker

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tj(replicas: int = 2, **spec) -> TrainingJob:
    manifest = make_job("llm").with_spec(replicas=replicas, **spec)
    manifest["metadata"].update(namespace="ns", uid="u1", generation=1)
    return TrainingJob.parse(manifest)


def running(index: int, restart: int = 0, **kw) -> ObservedWorker:
    return ObservedWorker(index=index, phase="Running", ready=True, restart=restart, **kw)


def pending(index: int, restart: int = 0, **kw) -> ObservedWorker:
    return ObservedWorker(index=index, phase="Pending", ready=False, restart=restart, **kw)


def failed(index: int, code: int | None = 1, restart: int = 0, **kw) -> ObservedWorker:
    return ObservedWorker(
        index=index, phase="Failed", ready=False, restart=restart, exit_code=code, **kw
    )


def succeeded(index: int, restart: int = 0, **kw) -> ObservedWorker:
    return ObservedWorker(
        index=index, phase="Succeeded", ready=False, restart=restart, exit_code=0, **kw
    )
