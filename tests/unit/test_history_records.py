"""What a job's history record says, and which listing filters are refused and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from carina.platform.cli.history import since_time
from carina.platform.history.query import (
    QueryError,
    decode_continue,
    encode_continue,
    history_query,
    parse_label_selector,
)
from carina.platform.history.record import (
    EventSeen,
    counted_events,
    merged,
    record_of,
    thinned,
)


def job(**status: object) -> dict[str, object]:
    return {
        "metadata": {
            "uid": "u-1",
            "namespace": "team-a",
            "name": "llm",
            "labels": {"team": "nlp"},
            "creationTimestamp": "2026-05-01T12:00:00Z",
        },
        "spec": {"replicas": 2, "queue": "training"},
        "status": status,
    }


def test_a_failed_job_says_why_from_its_failed_condition() -> None:
    record = record_of(
        job(
            phase="Failed",
            completionTime="2026-05-01T13:00:00Z",
            restarts=3,
            conditions=[
                {
                    "type": "Running",
                    "status": "False",
                    "reason": "WorkersFailed",
                    "lastTransitionTime": "2026-05-01T13:00:00Z",
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "3 restarts",
                    "lastTransitionTime": "2026-05-01T12:59:00Z",
                },
            ],
            progress={"step": 40, "loss": 2.5, "tokensPerSecond": 1200.0},
            goodput={"allocated": 100.0, "productive": 80.0},
        )
    )
    assert (record.phase, record.reason, record.message) == (
        "Failed",
        "BackoffLimitExceeded",
        "3 restarts",
    )
    assert record.finished_at == datetime(2026, 5, 1, 13, tzinfo=UTC)
    assert (record.restarts, record.final_step, record.final_loss) == (3, 40, 2.5)
    assert record.queue == "training"
    assert record.labels == {"team": "nlp"}
    assert record.metrics.tokens_per_second == 1200.0
    assert record.metrics.goodput == pytest.approx(0.8)


def test_a_job_deleted_while_running_keeps_its_phase_and_has_no_finish_time() -> None:
    deleted = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    record = record_of(job(phase="Running", startTime="2026-05-01T12:01:00Z"), deleted_at=deleted)
    assert record.phase == "Running"
    assert record.finished_at is None
    assert record.deleted_at == deleted
    assert record.sort_time() == deleted.timestamp()  # listed by when it went


def test_the_capture_at_deletion_keeps_the_log_tails_read_when_the_job_finished() -> None:
    at_end = record_of(job(phase="Succeeded"), loss=[(1, 2.0)], logs={"0": "done\n", "1": "ok\n"})
    at_deletion = record_of(
        job(phase="Succeeded"), logs={}, deleted_at=datetime(2026, 5, 2, tzinfo=UTC)
    )
    both = merged(at_end, at_deletion)
    assert both.logs == {"0": "done\n", "1": "ok\n"}
    assert both.metrics.loss == [(1, 2.0)]
    assert both.deleted_at == datetime(2026, 5, 2, tzinfo=UTC)


def test_repeated_events_are_counted_once_with_their_first_and_last_time() -> None:
    t = [datetime(2026, 5, 1, 12, m, tzinfo=UTC) for m in range(3)]
    events = counted_events(
        [
            EventSeen("Warning", "WorkerFailed", "worker 0 exited 1", t[0]),
            EventSeen("Normal", "Started", "gang up", t[1]),
            EventSeen("Warning", "WorkerFailed", "worker 0 exited 1", t[2]),
        ]
    )
    assert [(e.reason, e.count) for e in events] == [("WorkerFailed", 2), ("Started", 1)]
    assert (events[0].first_timestamp, events[0].last_timestamp) == (t[0], t[2])


def test_a_long_loss_curve_is_thinned_keeping_its_ends() -> None:
    curve = [(s, 10.0 / s) for s in range(1, 10_001)]
    kept = thinned(curve, limit=100)
    assert len(kept) == 100
    assert kept[0] == curve[0]
    assert kept[-1] == curve[-1]


@pytest.mark.parametrize(
    ("params", "param", "rule"),
    [
        ({"phase": "Done"}, "phase", "must be one of Pending, Queued"),
        ({"name": "Not_A_Name"}, "name", "must be a job name"),
        ({"since": "yesterday"}, "since", "RFC 3339"),
        ({"since": "2026-05-01T12:00:00"}, "since", "with a zone"),
        ({"until": "2026-13-01T12:00:00Z"}, "until", "real date"),
        (
            {"since": "2026-05-02T00:00:00Z", "until": "2026-05-01T00:00:00Z"},
            "until",
            "must not be before since",
        ),
        ({"label_selector": "team"}, "labelSelector", "key=value"),
        ({"label_selector": "team!=nlp"}, "labelSelector", "key=value"),
        ({"label_selector": "-bad=x"}, "labelSelector", "name part"),
        ({"label_selector": "team=a b"}, "labelSelector", "value"),
        ({"limit": 0}, "limit", "between 1 and 500"),
        ({"limit": 501}, "limit", "between 1 and 500"),
        ({"continue_": "not-a-token"}, "continue", "previous page"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_parameter_and_the_rule(
    params: dict[str, Any], param: str, rule: str
) -> None:
    with pytest.raises(QueryError) as refused:
        history_query(**params)
    assert refused.value.param == param
    assert rule in refused.value.rule


def test_label_selectors_and_continue_tokens_read_back() -> None:
    assert parse_label_selector("team=nlp, carina.dev/size==small") == (
        ("carina.dev/size", "small"),
        ("team", "nlp"),
    )
    assert decode_continue(encode_continue(1777636800.5, "u-1")) == (1777636800.5, "u-1")
    query = history_query(since="2026-05-01T12:00:00Z", label_selector="team=nlp")
    assert query.since == datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp()


def test_carina_history_since_takes_a_span_ago_or_a_time_as_given() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert since_time("2h", now) == "2026-05-01T10:00:00Z"
    assert since_time("7d", now) == "2026-04-24T12:00:00Z"
    assert since_time("2026-04-01T00:00:00Z", now) == "2026-04-01T00:00:00Z"
