"""Straggler detection (platform/planning/stragglers.py): which ranks are outliers, and where."""

from __future__ import annotations

import pytest
from planning_fakes import running, tj

from carina.platform.api.types import Straggler, TrainingJobStatus
from carina.platform.planning.stragglers import (
    STRAGGLERS_KEPT,
    find_stragglers,
    newly_named,
    outliers,
    straggler_message,
)

EIGHT_EVEN = dict.fromkeys(range(8), 0.2)


@pytest.mark.parametrize(
    ("case", "seconds", "named", "slow"),
    [
        ("one rank has no one to compare with", {0: 9.0}, (), []),
        ("an even gang has no straggler", EIGHT_EVEN, (), []),
        ("one slow rank of eight is named", {**EIGHT_EVEN, 5: 0.35}, (), [5]),
        ("a rank just under the factor is not", {**EIGHT_EVEN, 5: 0.29}, (), []),
        (
            "a noisy but healthy gang names no one (the robust margin)",
            {0: 0.10, 1: 0.16, 2: 0.12, 3: 0.19, 4: 0.11, 5: 0.17, 6: 0.14, 7: 0.22},
            (),
            [],
        ),
        (
            "a rank far outside the noise is named",
            {0: 0.10, 1: 0.16, 2: 0.12, 3: 0.19, 4: 0.11, 5: 0.17, 6: 0.14, 7: 0.90},
            (),
            [7],
        ),
        ("of two ranks neither is named: no telling luck from a fault", {0: 0.1, 1: 0.2}, (), []),
        ("of three ranks the slow one is", {0: 0.1, 1: 0.2, 2: 0.1}, (), [1]),
        ("two slow ranks, slowest first", {**EIGHT_EVEN, 2: 0.4, 6: 0.6}, (), [6, 2]),
        (
            "a named rank stays named a little under the factor (no flapping)",
            {**EIGHT_EVEN, 5: 0.27},
            (5,),
            [5],
        ),
        ("and goes once it has caught up", {**EIGHT_EVEN, 5: 0.24}, (5,), []),
        (
            "a slow half (one slow node's ranks) is named against the lower median",
            {r: 0.2 if r < 4 else 0.4 for r in range(8)},
            (),
            [4, 5, 6, 7],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_which_ranks_are_stragglers(
    case: str, seconds: dict[int, float], named: tuple[int, ...], slow: list[int]
) -> None:
    assert [rank for rank, _, _ in outliers(seconds, 1.5, named)] == slow, case


def test_five_slow_ranks_of_eight_set_the_median_and_nobody_is_named() -> None:
    seconds = {r: 0.2 if r < 3 else 0.4 for r in range(8)}
    assert outliers(seconds, 1.5) == []


def test_a_rank_maps_to_its_worker_and_that_workers_node_in_the_current_generation() -> None:
    job = tj(replicas=4, resources={"ranksPerWorker": 2})
    workers = [
        running(0, node="a"),
        running(1, node="b"),
        running(1, restart=1, node="old"),  # an older generation's worker 1: not this gang
        running(2, node="c"),
        running(3, node="d"),
    ]
    seconds = dict.fromkeys(range(8), 0.1) | {3: 0.3, 9: 5.0}  # rank 9 is beyond the gang
    assert find_stragglers(job, workers, 0, seconds) == [
        Straggler(rank=3, worker=1, node="b", step_seconds=0.3, median_seconds=0.1)
    ]


def test_status_keeps_the_slowest_few() -> None:
    job = tj(replicas=64)
    seconds = dict.fromkeys(range(64), 0.1) | {r: 1.0 + r for r in range(20)}
    found = find_stragglers(job, [], 0, seconds)
    assert len(found) == STRAGGLERS_KEPT
    assert found[0].rank == 19


def test_a_straggler_is_news_once_and_again_on_another_node() -> None:
    s = Straggler(rank=3, worker=1, node="b", step_seconds=0.3, median_seconds=0.1)
    before = TrainingJobStatus(stragglers=[s])
    slower = s.model_copy(update={"step_seconds": 0.4})
    assert newly_named(None, before) == [s]
    assert newly_named(before, TrainingJobStatus(stragglers=[slower])) == []
    moved = s.model_copy(update={"node": "e"})
    assert newly_named(before, TrainingJobStatus(stragglers=[moved])) == [moved]


def test_the_message_says_how_much_slower() -> None:
    s = Straggler(rank=3, worker=1, node="b", step_seconds=0.3, median_seconds=0.1)
    assert straggler_message(s) == (
        "rank 3 (worker 1 on node b) computes a step in 0.3s, 3.0x the median rank's 0.1s"
    )
