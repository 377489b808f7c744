"""A run's checkpoints: resume, interval saves and the already-saved short-cut.

torchtitan's checkpoint manager in Carina's terms. The loop offers a save after every step and
the checkpointer decides (every CARINA_CHECKPOINT_INTERVAL steps); the final save and the one
on SIGTERM are forced. A step that is already saved (the one a run resumed from, or an interval
save followed by the final one) is not written again. The format is `checkpoint.py`'s: weights,
optimizer and RNG, plus the workload's own state under the manifest's `trainer` key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from carina.workloads.config import Architecture
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.checkpoint import Restored
from carina.workloads.runtime.checkpoint_refs import CheckpointRef
from carina.workloads.runtime.storage import Store
from carina.workloads.runtime.telemetry import Telemetry

LogFn = Callable[..., None]


class Checkpointed(Protocol):
    """What a checkpoint holds of a workload."""

    step: int  # optimizer steps completed

    @property
    def raw(self) -> nn.Module:
        """The unwrapped model (checkpoints hold its full state, whatever the parallelism)."""

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    @property
    def arch(self) -> Architecture: ...

    def state_dict(self) -> dict[str, Any]:
        """What the workload needs beyond weights and optimizer to continue exactly."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the state a checkpoint's `trainer` key holds."""


class Checkpointer:
    """Saves and restores one run's checkpoints (collectively: every rank calls it)."""

    def __init__(
        self,
        store: Store | None,
        interval: int,
        keep: int,
        restart: int,
        telemetry: Telemetry,
        log: LogFn,
    ) -> None:
        self.store, self.interval, self.keep, self.restart = store, interval, keep, restart
        self.telemetry, self.log = telemetry, log
        self.saved_step: int | None = None
        # Steps whose checkpoints pruning keeps (a staged run's stage ends).
        self.pinned: frozenset[int] = frozenset()

    def restore(self, w: Checkpointed) -> Restored | None:
        """Load the newest intact checkpoint into `w`; None without a store or a checkpoint."""
        if self.store is None:
            return None
        restored = checkpoint.restore_latest(
            self.store, w.raw, w.optimizer, self.telemetry.on_checkpoint_skipped
        )
        if restored is None:
            return None
        w.load_state_dict(restored.manifest["trainer"])
        self.saved_step = w.step
        self.telemetry.on_resume(restored.ref)
        self.log("resumed", step=w.step, uri=restored.ref.uri, restart=self.restart)
        return restored

    def due(self, step: int) -> bool:
        """True on the steps the interval asks for (never with interval 0)."""
        return self.interval > 0 and step % self.interval == 0

    def save(self, w: Checkpointed, force: bool = False) -> CheckpointRef | None:
        """Save `w` when forced or due; None when nothing is saved or there is no store."""
        if self.store is None or not (force or self.due(w.step)):
            return None
        if self.saved_step == w.step:  # nothing changed since the last save
            return checkpoint.ref_at(self.store, w.step)
        t0 = time.perf_counter()
        ref = checkpoint.save(
            self.store,
            w.step,
            w.raw,
            w.optimizer,
            w.state_dict(),
            w.arch,
            keep=self.keep,
            pinned=self.pinned,
        )
        seconds = time.perf_counter() - t0
        self.saved_step = w.step
        self.telemetry.on_checkpoint(ref, seconds)
        self.log("checkpoint", step=ref.step, uri=ref.uri, seconds=round(seconds, 3))
        return ref
