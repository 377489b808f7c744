"""The embedded platform's one queue: whole gangs, priority then age, no overtaking."""

from __future__ import annotations

from carina.platform.api.queues import CPU, GPU, MEMORY
from carina.platform.planning.queue_view import machine_queue
from carina.platform.planning.queueing import Held, JobInfo, schedule

MACHINE = machine_queue(cpus=4, memory_bytes=16 * 2**30, gpus=0)


def job(key: str, cpus: float, running: bool = False, gpus: int = 0, t: float = 0) -> JobInfo:
    demand = {CPU: cpus, MEMORY: 2.0**30, GPU: float(gpus)}
    held = Held(MACHINE.name, demand, admitted_at=0) if running else None
    return JobInfo(key=key, queue=MACHINE.name, demand=demand, timestamp=t, held=held)


def test_jobs_that_fit_together_are_all_admitted() -> None:
    result = schedule([MACHINE], [job("a", 2), job("b", 2, t=1)], now=10)
    assert set(result.admit) == {"a", "b"}
    assert result.pending == {}


def test_a_gang_is_admitted_whole_or_waits() -> None:
    result = schedule([MACHINE], [job("a", 3), job("b", 2, t=1)], now=10)
    assert set(result.admit) == {"a"}
    assert result.pending["b"].reason == "WaitingForQuota"
    assert "needs 2 CPUs, 1 available to this-machine now" in result.pending["b"].message


def test_running_jobs_keep_their_place_ahead_of_the_queue() -> None:
    result = schedule([MACHINE], [job("new", 2), job("old", 3, running=True, t=5)], now=10)
    assert result.admit == {}
    assert result.pending["new"].reason == "WaitingForQuota"


def test_a_small_job_does_not_overtake_a_bigger_one_waiting_ahead_of_it() -> None:
    jobs = [job("running", 2, running=True), job("big", 4, t=1), job("small", 1, t=2)]
    result = schedule([MACHINE], jobs, now=10)
    assert result.admit == {}
    assert set(result.pending) == {"big", "small"}
    assert result.pending["big"].position == 1
    assert result.pending["small"].position == 2


def test_a_job_bigger_than_the_machine_says_so_and_does_not_block_others() -> None:
    jobs = [job("huge", 64), job("gpu", 1, gpus=1, t=1), job("ok", 1, t=2)]
    result = schedule([MACHINE], jobs, now=10)
    assert result.pending["huge"].reason == "ExceedsMaxQuota"
    assert "needs 64 CPUs" in result.pending["huge"].message
    assert "this-machine can ever hold (4)" in result.pending["huge"].message
    assert "1 GPUs" in result.pending["gpu"].message
    assert set(result.admit) == {"ok"}


def test_a_higher_priority_job_preempts_a_lower_one_on_the_machine() -> None:
    low = job("low", 4, running=True)
    high = JobInfo(
        key="high", queue=MACHINE.name, demand={CPU: 2.0, MEMORY: 2.0**30}, priority=10, timestamp=5
    )
    result = schedule([MACHINE], [low, high], now=10)
    assert result.evict["low"].reason == "Preempted"
    assert result.evict["low"].preemptor == "high"
    assert result.pending["high"].reason == "WaitingForPreemptedWorkloads"
