"""Admission: which jobs' gangs may have workers now, all or nothing per gang.

Pure, and the same for every substrate: it is given the jobs in admission order (priority,
then age) with what each gang asks for, and what there is, and says which may run and why
the others wait. A job that holds workers keeps its place; a job that does not fit waits, and
so does every lower job (no backfilling past a bigger job, so a big job cannot starve behind a
stream of small ones). A gang larger than everything there is waits for nothing: it is Pending,
not Queued. The embedded platform gives its machine as the capacity; quotas extend the same
shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from carina.platform.api.quantity import parse_quantity
from carina.platform.api.types import TrainingJob
from carina.platform.planning.engine import JobAdmission


@dataclass(frozen=True)
class Capacity:
    """What there is for workers: a machine, or (later) a quota."""

    cpus: float
    memory_bytes: float
    gpus: int = 0
    name: str = "this machine"  # how a waiting reason names it


@dataclass(frozen=True)
class Demand:
    """What one job's whole gang asks for, and whether it already holds it."""

    key: str
    cpus: float
    memory_bytes: float
    gpus: int
    running: bool


@dataclass(frozen=True)
class Admission:
    admitted: frozenset[str]
    waiting: dict[str, str]  # key -> why it waits
    # Keys whose gang asks for more than the whole machine has: they wait for nothing.
    never_fits: frozenset[str] = frozenset()


def admit(demands: Sequence[Demand], capacity: Capacity) -> Admission:
    """Admit running jobs first, then waiting ones in order while the whole gang fits."""
    free_cpu, free_mem, free_gpu = capacity.cpus, capacity.memory_bytes, capacity.gpus
    admitted: set[str] = set()
    for d in demands:
        if d.running:
            admitted.add(d.key)
            free_cpu, free_mem, free_gpu = (
                free_cpu - d.cpus,
                free_mem - d.memory_bytes,
                free_gpu - d.gpus,
            )
    waiting: dict[str, str] = {}
    never: set[str] = set()
    blocked = False
    for d in demands:
        if d.running:
            continue
        if (
            d.cpus > capacity.cpus
            or d.memory_bytes > capacity.memory_bytes
            or d.gpus > capacity.gpus
        ):
            never.add(d.key)
            waiting[d.key] = (
                f"needs {_fmt(d.cpus)} CPUs, {d.memory_bytes / 2**30:.1f}Gi memory, {d.gpus} GPUs;"
                f" {capacity.name} offers {_fmt(capacity.cpus)} CPUs,"
                f" {capacity.memory_bytes / 2**30:.1f}Gi, {capacity.gpus} GPUs"
            )
            continue
        fits = d.cpus <= free_cpu + 1e-9 and d.memory_bytes <= free_mem and d.gpus <= free_gpu
        if blocked or not fits:
            blocked = True
            waiting[d.key] = "waiting for capacity held by other jobs"
            continue
        admitted.add(d.key)
        free_cpu, free_mem, free_gpu = (
            free_cpu - d.cpus,
            free_mem - d.memory_bytes,
            free_gpu - d.gpus,
        )
    return Admission(frozenset(admitted), waiting, frozenset(never))


def gang_demand(job: TrainingJob, key: str, running: bool) -> Demand:
    """What a job's whole gang asks for; ValueError naming a field it cannot count."""
    r = job.spec.resources
    n = job.spec.replicas
    return Demand(
        key=key,
        cpus=n * _quantity(r.cpu, "spec.resources.cpu"),
        memory_bytes=n * _quantity(r.memory, "spec.resources.memory"),
        gpus=n * r.gpus,
        running=running,
    )


def _quantity(value: int | str, path: str) -> float:
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def job_admission(admission: Admission, key: str, admitted_why: str) -> JobAdmission:
    """One job's part of an admission decision, as the lifecycle engine takes it."""
    if key in admission.admitted:
        return JobAdmission(True, admitted_why)
    return JobAdmission(
        False,
        admission.waiting.get(key) or "waiting for capacity",
        never_fits=key in admission.never_fits,
    )


def _fmt(x: float) -> str:
    return str(int(x)) if math.isclose(x, round(x)) else f"{x:g}"
