"""Which jobs fit on this machine: a first-come queue by priority, all-or-nothing per gang.

Pure: the substrate passes the jobs in admission order (priority, then age) with what each
asks for, and learns which may run. A job that holds workers keeps its place; a job that
does not fit waits, and so does every lower job that asks for the same resource (no
backfilling past a bigger job, so a big job cannot starve behind a stream of small ones).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    """What this machine offers to workers."""

    cpus: float
    memory_bytes: float
    gpus: int = 0


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
                f" this machine offers {_fmt(capacity.cpus)} CPUs,"
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


def visible_gpus(env: Mapping[str, str] | None = None) -> int:
    """GPUs this machine offers: those `nvidia-smi -L` lists, narrowed by CUDA_VISIBLE_DEVICES."""
    env = os.environ if env is None else env
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def assign_gpus(total: int, held: Iterable[int], per_worker: int, workers: int) -> list[list[int]]:
    """GPU indices for each of `workers` workers from the ones not `held`; [] if they don't fit."""
    free = [g for g in range(total) if g not in set(held)]
    if per_worker * workers > len(free):
        return []
    return [free[i * per_worker : (i + 1) * per_worker] for i in range(workers)]


def _fmt(x: float) -> str:
    return str(int(x)) if math.isclose(x, round(x)) else f"{x:g}"
