"""How long this rank's steps take: the wall time, and the compute time a straggler shows in.

Two figures per optimizer step, each kept over the last `WINDOW` steps (medians, so a save,
an evaluation or one slow batch does not move them):

- **wall**: seconds between the starts of two steps, what the step gauge's pace is. Global
  rank 0 exports its median (`carina_worker_step_seconds`): the platform's yardstick for a
  step that stopped advancing (a stall).
- **compute**: seconds from the step's start (just after the ranks agreed to go on, so they
  start together) to the moment this rank's backward has produced all its gradients, before
  it waits for the others. In synchronous data parallel a slow rank makes every rank's wall
  time equal (the fast ones wait in the gradient all-reduce), so only this tells them apart.
  It is taken with a multi-gradient hook on the trainable parameters that fires once every
  gradient of a backward is computed (`torch.autograd.graph.register_multi_grad_hook`):
  DDP's bucket all-reduces run asynchronously meanwhile, and its wait for them comes after,
  in the backward's final callback. On a GPU the hook records a CUDA event rather than
  reading a clock (no synchronisation; the event is read at the next step, long finished);
  on the CPU it reads the clock. With gradient accumulation the last micro-batch's backward
  ends the compute. Where the hook never fires (a step without backward, or FSDP, whose
  sharded parameters receive their gradients only after the reduce-scatter) the compute
  ends with the step itself, waits included.

Every `GATHER_EVERY` steps the ranks all-gather their compute medians (one float each, a
single small collective), and global rank 0 exports them, one series per rank
(`carina_worker_rank_step_seconds{rank}`): the platform names the outliers stragglers.
"""

from __future__ import annotations

import time
from collections import deque
from statistics import median
from typing import Any

import torch
from torch import nn

# Steps each median is taken over.
WINDOW = 20
# Steps between two gathers of every rank's compute time (the collective costs tens of
# microseconds; once every ten steps is lost in the noise of any real step).
GATHER_EVERY = 10


class StepTimes:
    """One rank's recent wall and compute seconds per step."""

    def __init__(self, device: torch.device, window: int = WINDOW) -> None:
        self.cuda = device.type == "cuda"
        self.wall: deque[float] = deque(maxlen=window)
        self.compute: deque[float] = deque(maxlen=window)
        self._began: float | None = None  # perf_counter at this step's start
        self._stepping = False  # between `begin` and `end`
        self._ready: float | None = None  # ... when its gradients were last all computed
        self._start_event: Any = None
        self._ready_event: Any = None
        self._pending: tuple[Any, Any] | None = None  # a GPU step's events, read next step
        self._hook: Any = None

    def watch(self, model: nn.Module | None) -> None:
        """Note the moment each backward has computed every trainable parameter's gradient."""
        if self._hook is not None or model is None:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        if params:
            self._hook = torch.autograd.graph.register_multi_grad_hook(
                params, self._grads_ready, mode="all"
            )

    def unwatch(self) -> None:
        """Remove the gradient hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _grads_ready(self, _grads: Any) -> None:
        if not self._stepping:
            return  # a backward outside a step (a calibration)
        if self.cuda:
            self._ready_event = torch.cuda.Event(enable_timing=True)
            self._ready_event.record()
        else:
            self._ready = time.perf_counter()

    def begin(self) -> None:
        """A step starts (every rank has just agreed to go on)."""
        now = time.perf_counter()
        self._read_pending()
        if self._began is not None:
            self.wall.append(now - self._began)
        self._began, self._ready, self._ready_event = now, None, None
        self._stepping = True
        if self.cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()

    def end(self) -> None:
        """The step's work is done (its optimizer step issued)."""
        if not self._stepping or self._began is None:
            return
        self._stepping = False
        if self.cuda:
            ready = self._ready_event
            if ready is None:  # no backward seen: the whole step
                ready = torch.cuda.Event(enable_timing=True)
                ready.record()
            self._pending = (self._start_event, ready)
        else:
            done = self._ready if self._ready is not None else time.perf_counter()
            self.compute.append(done - self._began)

    def _read_pending(self) -> None:
        """A GPU step's compute time, from its events (complete by the next step)."""
        if self._pending is None:
            return
        start, ready = self._pending
        self._pending = None
        ready.synchronize()  # already passed: the ranks' agreement waited for the device
        self.compute.append(start.elapsed_time(ready) / 1000.0)

    def pause(self) -> None:
        """Time that is not stepping follows (a save): the next step's wall time starts anew."""
        self._read_pending()
        self._began = None

    def wall_median(self) -> float | None:
        """Median seconds between step starts over the window (None before two steps)."""
        return median(self.wall) if self.wall else None

    def compute_median(self) -> float | None:
        """Median compute seconds per step over the window (None before a step)."""
        self._read_pending()
        return median(self.compute) if self.compute else None
