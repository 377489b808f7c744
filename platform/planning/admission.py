"""What a machine offers its workers: the embedded platform's capacity.

Admission itself is `planning.queueing.schedule`; the embedded platform gives it one implicit
ClusterQueue of this size (`planning.queue_view.machine_queue`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    """What there is for workers: a machine, or (later) a quota."""

    cpus: float
    memory_bytes: float
    gpus: int = 0
    name: str = "this machine"  # how a waiting reason names it
