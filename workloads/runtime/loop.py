"""The run loop every training workload shares (the shape of torchtitan's trainer).

A workload (`Workload`) provides its optimizer step (`train_step`), its own state
(`state_dict`/`load_state_dict`) and what its checkpoints hold (`raw`, `optimizer`, `arch`).
The loop (`RunLoop`) owns the rest, once for every workload:

- the SIGTERM protocol: at each step boundary the ranks agree (an all-reduce of the flag), save
  together, rank 0 writes the termination message, and the run exits PREEMPTED (75);
- rank 0's final word: on success too, the termination message holds the last step, total
  steps, loss and newest checkpoint, or the result a workload's `finish` wrote from it (the
  metrics endpoint is gone once the worker exits);
- checkpoints (`Checkpointer`): resume, interval saves, the final save;
- telemetry: the step, loss, learning rate, tokens per second and MFU of every `log_every`-th
  step (and of the last), as metrics (the platform's live progress) and a `step` event;
  checkpoints and resumes. The step gauge itself moves every step, and the step times
  (`step_times.py`) are kept every step: rank 0's median step time, and every `GATHER_EVERY`
  steps each rank's compute time, gathered to rank 0 (the platform's signs of a stalled job
  and of a straggling rank);
- setup and teardown (`run_workload`): the SIGTERM handler, the process group, the metrics
  server.

Tokens per second and MFU are measured over the steps since the previous logged one, without
the time spent saving. MFU is unknown (the `mfu` field null, the gauge NaN) where the device's
peak is (CPUs, unlisted GPUs; CARINA_PEAK_FLOPS sets it) or a workload cannot count its FLOPs.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from carina.workloads.config import Architecture, ExitCode
from carina.workloads.contract import WorkerContext
from carina.workloads.runtime import distributed
from carina.workloads.runtime.checkpoint import Restored
from carina.workloads.runtime.checkpoint_refs import CheckpointRef
from carina.workloads.runtime.checkpointer import Checkpointer
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.flops import mfu, peak_flops
from carina.workloads.runtime.step_times import GATHER_EVERY, StepTimes
from carina.workloads.runtime.storage import Store, open_store
from carina.workloads.runtime.telemetry import Telemetry, log_event, write_termination_message


@dataclass(frozen=True)
class StepReport:
    """What one optimizer step produced, as the workload saw it."""

    loss: torch.Tensor | float  # this rank's; the loop averages it across ranks when it logs
    lr: float  # the schedule's base learning rate
    tokens: int  # tokens trained on, all ranks
    flops: float | None  # model FLOPs of the step, all ranks (flops.py); None: unknown
    fields: dict[str, Any] = field(default_factory=dict)  # more fields of the `step` event


@dataclass(frozen=True)
class StepRecord:
    """What a logged optimizer step produced (`on_step` runs every `log_every` steps)."""

    step: int  # steps completed, 1-based
    loss: float  # mean over the global batch
    lr: float
    tokens_per_second: float  # all ranks, since the previous logged step


StepCallback = Callable[[StepRecord, PreemptionFlag], None]


class Workload(ABC):
    """One rank's share of a training workload, stepped by its `RunLoop`.

    A subclass creates `self.loop = RunLoop(self, ...)` before anything that needs telemetry
    (its registry takes the workload's own metrics), then its model and optimizer, then calls
    `self.loop.resume()`.
    """

    loop: RunLoop
    step: int = 0  # optimizer steps completed
    raw: nn.Module  # the unwrapped model: checkpoints hold its full state
    optimizer: torch.optim.Optimizer
    arch: Architecture

    @abstractmethod
    def train_step(self) -> StepReport:
        """One optimizer step; advances `step`."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint needs beyond weights and optimizer to continue exactly."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (`step` included)."""

    def start(self) -> None:
        """Work before the first step of this attempt (a `start` event, calibration)."""
        return None

    def after_step(self) -> None:
        """Work after a step, before its interval save (held-out evaluation)."""
        return None

    def checkpoint_due(self) -> bool:
        """Whether this step must be saved whatever the interval (a stage's end)."""
        return False

    def finish(self) -> CheckpointRef | None:
        """Work after the last step and the final save (quantization, reports).

        A result that supersedes the final checkpoint (quantize's packed model) is returned:
        the termination message names it as the run's final checkpoint.
        """
        return None

    @property
    def telemetry(self) -> Telemetry:
        """The loop's metrics and progress (a workload adds its own metrics to its registry)."""
        return self.loop.telemetry

    def run(self, on_step: StepCallback | None = None) -> ExitCode:
        """Train to the end; the exit code says how the run ended."""
        return self.loop.run(on_step)

    def close(self) -> None:
        """Stop the metrics server."""
        self.loop.close()


class Throughput:
    """Tokens and model FLOPs since the last logged step, and the time they took."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Open a new window (after a logged step)."""
        self.started = time.perf_counter()
        self.tokens = 0
        self.flops: float | None = 0.0

    def add(self, report: StepReport) -> None:
        """Count a step's tokens and FLOPs (unknown FLOPs make the window's unknown)."""
        self.tokens += report.tokens
        if self.flops is None or report.flops is None:
            self.flops = None
        else:
            self.flops += report.flops

    def exclude(self, seconds: float) -> None:
        """Leave time that was not training (a save) out of the rates."""
        self.started += seconds

    def rates(self, peak: float | None, devices: int) -> tuple[float, float | None]:
        """(tokens per second, MFU or None when unknown)."""
        seconds = max(time.perf_counter() - self.started, 1e-9)
        tps = self.tokens / seconds
        if self.flops is None or not self.tokens:
            return tps, None
        return tps, mfu(tps, self.flops / self.tokens, peak, devices)


class RunLoop:
    """Steps a workload to `total_steps`: checkpoints, the SIGTERM protocol, telemetry."""

    def __init__(
        self,
        workload: Workload,
        ctx: WorkerContext,
        d: Dist,
        preempt: PreemptionFlag,
        total_steps: int,
        log_every: int = 1,
    ) -> None:
        self.workload, self.ctx, self.d, self.preempt = workload, ctx, d, preempt
        self.total_steps, self.log_every = total_steps, log_every
        self.telemetry = Telemetry(ctx.job, ctx.namespace, d.rank, total_steps, ctx.metrics_port)
        store = open_store(ctx.checkpoint_uri) if ctx.checkpoint_uri else None
        self.checkpointer = Checkpointer(
            store,
            ctx.checkpoint_interval,
            ctx.checkpoint_keep,
            ctx.restart,
            self.telemetry,
            self.log,
        )
        self.peak = peak_flops(d.device)
        self.step_times = StepTimes(d.device)

    @property
    def store(self) -> Store | None:
        """Where checkpoints go (CARINA_CHECKPOINT_URI); None without one."""
        return self.checkpointer.store

    def log(self, event: str, **fields: Any) -> None:
        """An event line from global rank 0 (the others stay quiet)."""
        if self.d.is_main:
            log_event(event, **fields)

    def resume(self) -> Restored | None:
        """Load the newest intact checkpoint into the workload, if there is one."""
        return self.checkpointer.restore(self.workload)

    def run(self, on_step: StepCallback | None = None) -> ExitCode:
        """Train to `total_steps`; SUCCEEDED after the final save, PREEMPTED after SIGTERM's."""
        w = self.workload
        w.start()
        self.step_times.watch(getattr(w, "raw", None))
        window = Throughput()
        while w.step < self.total_steps:
            if distributed.any_rank(self.preempt.requested, self.d):
                return self._preempted()
            self.step_times.begin()
            report = w.train_step()
            self.step_times.end()
            # Every step, not only logged ones: the platform judges a stall by its pace.
            self.telemetry.step_g.set(w.step)
            window.add(report)
            if w.step % self.log_every == 0 or w.step == self.total_steps:
                record = self._record(report, window)
                window.restart()
                if on_step is not None:
                    on_step(record, self.preempt)
            else:
                self.telemetry.tokens_c.inc(report.tokens)
            w.after_step()
            if w.step < self.total_steps:
                t0 = time.perf_counter()
                if self.checkpointer.save(w, force=w.checkpoint_due()) is not None:
                    window.exclude(time.perf_counter() - t0)
                    self.step_times.pause()
            self._share_step_times()
        ref = self.checkpointer.save(w, force=True) if self.total_steps else None
        ref = w.finish() or ref
        if self.d.is_main:
            write_termination_message(
                self.telemetry.final_word(w.step, ref), self.ctx.termination_log
            )
        self.log("done", step=w.step)
        return ExitCode.SUCCEEDED

    def _record(self, report: StepReport, window: Throughput) -> StepRecord:
        """A logged step: the loss averaged across ranks, its metrics and its event."""
        step = self.workload.step
        loss_t = torch.as_tensor(report.loss, device=self.d.device)
        loss = float(distributed.mean(loss_t, self.d).item())
        tps, util = window.rates(self.peak, self.d.world_size)
        gauge = math.nan if util is None else util  # NaN: Prometheus' "unknown"
        self.telemetry.on_step(step, loss, report.lr, report.tokens, tps, gauge)
        self.log(
            "step",
            step=step,
            loss=round(loss, 5),
            lr=report.lr,
            tokensPerSecond=round(tps, 1),
            mfu=None if util is None else round(util, 4),
            **report.fields,
        )
        return StepRecord(step, loss, report.lr, tps)

    def _share_step_times(self) -> None:
        """Rank 0's median step time every step; every rank's compute time to rank 0 every
        `GATHER_EVERY` steps (every rank calls this at the same steps: a collective)."""
        wall = self.step_times.wall_median()
        if self.d.is_main and wall is not None:
            self.telemetry.on_step_seconds(wall)
        if self.workload.step % GATHER_EVERY:
            return
        mine = self.step_times.compute_median()
        every = distributed.gather_floats(mine or 0.0, self.d)
        if self.d.is_main:
            self.telemetry.on_rank_seconds(every)

    def _preempted(self) -> ExitCode:
        """Save collectively, acknowledge through the termination message, exit 75."""
        step = self.workload.step
        self.log("preempted", step=step)
        ref = self.checkpointer.save(self.workload, force=True)
        if self.d.is_main:
            write_termination_message(
                self.telemetry.final_word(step, ref), self.ctx.termination_log
            )
        return ExitCode.PREEMPTED

    def close(self) -> None:
        """Stop the metrics server."""
        self.step_times.unwatch()
        self.telemetry.close()


def run_workload(
    ctx: WorkerContext,
    build: Callable[[Dist, PreemptionFlag], Workload],
    on_step: StepCallback | None = None,
) -> ExitCode:
    """Handle SIGTERM, join the process group, build and run the workload, then tear down."""
    preempt = PreemptionFlag().install()
    workload: Workload | None = None
    try:
        d = distributed.setup(ctx.rank, ctx.world_size, ctx.local_rank)
        workload = build(d, preempt)
        return workload.run(on_step)
    finally:
        if workload is not None:
            workload.close()
        preempt.uninstall()
        distributed.teardown()
