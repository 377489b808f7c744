"""This machine's GPUs: how many there are, and which a new worker gets."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping


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
