"""This machine's GPUs: each worker gets its own, and none are invented."""

from __future__ import annotations

import pytest

from carina.platform.embedded.capacity import assign_gpus, visible_gpus


def test_each_worker_gets_gpus_no_other_job_holds() -> None:
    assert assign_gpus(8, held=[0, 1, 2], per_worker=2, workers=2) == [[3, 4], [5, 6]]
    assert assign_gpus(4, held=[], per_worker=4, workers=1) == [[0, 1, 2, 3]]
    assert assign_gpus(4, held=[1], per_worker=2, workers=2) == []


def test_visible_gpus_is_zero_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert visible_gpus() == 0
