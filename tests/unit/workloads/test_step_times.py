"""A rank's step times (workloads/runtime/step_times.py): what counts as compute, and as a step.

The clock is a fake one the test moves, so what is measured is exact.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from carina.workloads.runtime import step_times
from carina.workloads.runtime.step_times import StepTimes


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(step_times.time, "perf_counter", fake)
    return fake


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))


def backward(m: nn.Module, clock: Clock, at: float) -> None:
    """A forward and backward whose last gradient is ready at `at`."""
    loss = m(torch.ones(2, 4)).sum()
    clock.now = at
    loss.backward()


def test_compute_ends_when_the_gradients_are_ready_not_when_the_others_are_waited_for(
    clock: Clock,
) -> None:
    m = model()
    times = StepTimes(torch.device("cpu"))
    times.watch(m)
    for start in (0.0, 10.0, 20.0):
        clock.now = start
        times.begin()
        backward(m, clock, start + 2.0)  # computing: 2 s
        clock.now = start + 9.0  # waiting in the all-reduce, the optimizer step: 7 s more
        times.end()
    clock.now = 30.0
    times.begin()
    assert times.compute_median() == 2.0
    assert times.wall_median() == 10.0  # from one step's start to the next


def test_with_gradient_accumulation_the_last_backward_ends_the_compute(clock: Clock) -> None:
    m = model()
    times = StepTimes(torch.device("cpu"))
    times.watch(m)
    times.begin()
    backward(m, clock, 1.0)
    backward(m, clock, 3.0)
    clock.now = 5.0
    times.end()
    assert times.compute_median() == 3.0


def test_a_step_without_backward_is_all_compute(clock: Clock) -> None:
    times = StepTimes(torch.device("cpu"))
    times.watch(model())
    times.begin()
    clock.now = 4.0
    times.end()
    assert times.compute_median() == 4.0


def test_a_backward_outside_a_step_is_not_a_step(clock: Clock) -> None:
    m = model()
    times = StepTimes(torch.device("cpu"))
    times.watch(m)
    times.begin()
    clock.now = 1.0
    times.end()
    backward(m, clock, 50.0)  # a calibration between steps
    assert times.compute_median() == 1.0


def test_a_save_between_two_steps_is_not_a_step(clock: Clock) -> None:
    times = StepTimes(torch.device("cpu"))
    times.begin()
    clock.now = 1.0
    times.end()
    times.pause()  # saving from 1 to 60
    clock.now = 60.0
    times.begin()
    clock.now = 61.0
    times.end()
    clock.now = 62.0
    times.begin()
    assert list(times.wall) == [2.0]


def test_medians_are_of_the_recent_window(clock: Clock) -> None:
    times = StepTimes(torch.device("cpu"), window=3)
    for seconds in (9.0, 1.0, 1.0, 2.0):
        times.begin()
        clock.now += seconds
        times.end()
    assert times.compute_median() == 1.0
    assert times.wall_median() is not None
    assert StepTimes(torch.device("cpu")).compute_median() is None
