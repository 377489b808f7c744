"""Admission: whole gangs, in priority-then-age order, no overtaking a bigger job."""

from __future__ import annotations

from carina.platform.planning.admission import Capacity, Demand, admit

MACHINE = Capacity(cpus=4, memory_bytes=16 * 2**30)


def job(key: str, cpus: float, running: bool = False, gpus: int = 0) -> Demand:
    return Demand(key=key, cpus=cpus, memory_bytes=2**30, gpus=gpus, running=running)


def test_jobs_that_fit_together_are_all_admitted() -> None:
    result = admit([job("a", 2), job("b", 2)], MACHINE)
    assert result.admitted == {"a", "b"}
    assert result.waiting == {}


def test_a_gang_is_admitted_whole_or_waits() -> None:
    result = admit([job("a", 3), job("b", 2)], MACHINE)
    assert result.admitted == {"a"}
    assert "capacity" in result.waiting["b"]


def test_running_jobs_keep_their_place_ahead_of_the_queue() -> None:
    result = admit([job("new", 2), job("old", 3, running=True)], MACHINE)
    assert result.admitted == {"old"}
    assert "new" in result.waiting


def test_a_small_job_does_not_overtake_a_bigger_one_waiting_ahead_of_it() -> None:
    result = admit([job("running", 2, running=True), job("big", 4), job("small", 1)], MACHINE)
    assert result.admitted == {"running"}
    assert set(result.waiting) == {"big", "small"}


def test_a_job_bigger_than_the_machine_says_so_and_does_not_block_others() -> None:
    result = admit([job("huge", 64), job("gpu", 1, gpus=1), job("ok", 1)], MACHINE)
    assert "needs 64 CPUs" in result.waiting["huge"]
    assert "this machine offers 4 CPUs" in result.waiting["huge"]
    assert "1 GPUs" in result.waiting["gpu"]
    assert result.admitted == {"ok"}
    assert result.never_fits == {"huge", "gpu"}
