"""The stall rule (platform/planning/stall.py): when a Running job whose step stopped is stalled."""

from __future__ import annotations

from datetime import datetime

import pytest
from planning_fakes import at

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import Phase, Progress, StallPolicy, TrainingJobStatus
from carina.platform.planning.stall import allowance, stall_verdict, with_stepped_at
from carina.platform.planning.status import set_condition


def running_since(
    seconds: float,
    progress: Progress | None = None,
    phase: Phase = Phase.RUNNING,
) -> TrainingJobStatus:
    """A status whose workers started running at `at(seconds)`."""
    status = TrainingJobStatus(phase=phase, progress=progress)
    set_condition(status, ConditionType.RUNNING, True, Reason.WORKERS_RUNNING, "", at(seconds))
    return status


def stepped(step: int, when: float, median: float | None) -> Progress:
    return Progress(step=step, step_seconds=median, updated_at=at(when), stepped_at=at(when))


POLICY = StallPolicy(factor=10, min_seconds=60, startup_seconds=1800)


@pytest.mark.parametrize(
    ("case", "status", "now", "stalled", "until"),
    [
        (
            "a step within k x the median step time is on time",
            running_since(0, stepped(500, when=1000, median=10)),
            1099,
            False,
            at(1100),
        ),
        (
            "no step for more than k x the median step time is a stall",
            running_since(0, stepped(500, when=1000, median=10)),
            1101,
            True,
            None,
        ),
        (
            "a fast job is given minSeconds at least (a checkpoint save pauses the step)",
            running_since(0, stepped(500, when=1000, median=0.1)),
            1059,
            False,
            at(1060),
        ),
        (
            "and is stalled past minSeconds",
            running_since(0, stepped(500, when=1000, median=0.1)),
            1061,
            True,
            None,
        ),
        (
            "without a median step time the startup limit applies",
            running_since(0, stepped(500, when=1000, median=None)),
            2799,
            False,
            at(2800),
        ),
        (
            "no step yet: the workers have startupSeconds to log their first",
            running_since(100),
            1899,
            False,
            at(1900),
        ),
        (
            "no step at all within startupSeconds is a stall",
            running_since(100),
            1901,
            True,
            None,
        ),
        (
            "a step from before the gang started running counts as none (a restarted gang)",
            running_since(5000, stepped(500, when=1000, median=10)),
            6000,
            False,
            at(6800),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_stall_rule(
    case: str,
    status: TrainingJobStatus,
    now: float,
    stalled: bool,
    until: datetime | None,
) -> None:
    verdict = stall_verdict(POLICY, status, at(now))
    assert verdict is not None, case
    assert (verdict.stalled, verdict.at) == (stalled, until), case


@pytest.mark.parametrize("phase", [Phase.STARTING, Phase.RESTARTING, Phase.SUSPENDED])
def test_a_job_that_is_not_running_is_not_judged(phase: Phase) -> None:
    status = running_since(0, stepped(5, when=10, median=1), phase=phase)
    assert stall_verdict(POLICY, status, at(100_000)) is None


def test_the_evidence_names_the_last_step_when_the_median_the_factor_and_the_wait() -> None:
    status = running_since(0, stepped(1500, when=1000, median=2.5))
    verdict = stall_verdict(POLICY, status, at(1073))
    assert verdict is not None
    assert verdict.stalled
    assert "no step for 73s after step 1500" in verdict.evidence
    assert "2026-01-01T12:16:40Z" in verdict.evidence  # when step 1500 came
    assert "median step time is 2.5s" in verdict.evidence
    assert "10 x the median" in verdict.evidence
    assert "minSeconds 60" in verdict.evidence


@pytest.mark.parametrize(
    ("case", "known", "new", "stepped_at"),
    [
        (
            "the same step keeps the time it first advanced",
            Progress(step=7, updated_at=at(1), stepped_at=at(1)),
            Progress(step=7, updated_at=at(9), stepped_at=at(9)),
            at(1),
        ),
        (
            "a new step takes the time it was seen",
            Progress(step=7, updated_at=at(1), stepped_at=at(1)),
            Progress(step=8, updated_at=at(9), stepped_at=at(9)),
            at(9),
        ),
        (
            "a resumed gang's lower step is an advance too",
            Progress(step=70, updated_at=at(1), stepped_at=at(1)),
            Progress(step=61, updated_at=at(9), stepped_at=at(9)),
            at(9),
        ),
        (
            "progress without one takes its scrape time",
            None,
            Progress(step=3, updated_at=at(4)),
            at(4),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_stepped_at_moves_only_with_the_step(
    case: str, known: Progress | None, new: Progress, stepped_at: datetime
) -> None:
    assert with_stepped_at(known, new).stepped_at == stepped_at, case


def test_the_allowance_is_k_median_step_times_never_below_the_floor() -> None:
    assert allowance(POLICY, 30.0).total_seconds() == 300
    assert allowance(POLICY, 1.0).total_seconds() == 60
    assert allowance(POLICY, None).total_seconds() == 1800
    assert allowance(StallPolicy(factor=3, min_seconds=1), 0.5).total_seconds() == 1.5
