"""The history store on both of its databases: SQLite (a file) and a real PostgreSQL server.

Every test runs twice, once per database, through the one interface the control plane uses:
listings newest end first a page at a time, filters, one namespace's records only,
retention by age and count, and the numbered migrations on an empty and on an old database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carina.platform.history.migrations import LATEST
from carina.platform.history.query import history_query
from carina.platform.history.record import HistoryRecord, record_of
from carina.platform.history.store import HistoryStore

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return str(request.getfixturevalue("postgres"))


@pytest.fixture
def store(url: str) -> HistoryStore:
    return HistoryStore(url)


def finished(
    name: str,
    minutes: float,
    namespace: str = "team-a",
    phase: str = "Succeeded",
    labels: dict[str, str] | None = None,
    uid: str | None = None,
) -> HistoryRecord:
    """A job that finished `minutes` after T0."""
    end = (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return record_of(
        {
            "metadata": {
                "uid": uid or f"uid-{namespace}-{name}",
                "namespace": namespace,
                "name": name,
                "labels": labels or {},
                "creationTimestamp": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": {"replicas": 1},
            "status": {"phase": phase, "completionTime": end, "progress": {"step": 10}},
        },
        loss=[(1, 3.0), (10, 1.0)],
        logs={"0": f"{name} done\n"},
    )


def names(store: HistoryStore, namespace: str = "team-a", **query: Any) -> list[str]:
    return [s.name for s in store.list(namespace, history_query(**query)).items]


def test_a_listing_is_newest_end_first_and_pages_never_repeat_or_skip(store: HistoryStore) -> None:
    for i in range(7):
        store.put(finished(f"job-{i}", minutes=i))
    store.put(finished("tie-a", minutes=3, uid="uid-tie-a"))  # same end as job-3
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = store.list("team-a", history_query(limit=3, continue_=token))
        seen += [s.name for s in page.items]
        pages += 1
        token = page.continue_
        if token is None:
            break
        store.put(finished("newer", minutes=100))  # new records in front change no page
    assert pages == 3
    assert seen[:3] == ["job-6", "job-5", "job-4"]
    assert sorted(seen[3:5]) == ["job-3", "tie-a"]
    assert seen[5:] == ["job-2", "job-1", "job-0"]


def test_filters_by_phase_name_time_and_labels(store: HistoryStore) -> None:
    store.put(finished("a", 1, labels={"team": "nlp", "size": "small"}))
    store.put(finished("b", 2, phase="Failed", labels={"team": "nlp"}))
    store.put(finished("c", 3, labels={"team": "vision"}))
    assert names(store, phase="Failed") == ["b"]
    assert names(store, name="c") == ["c"]
    assert names(store, label_selector="team=nlp") == ["b", "a"]
    assert names(store, label_selector="team=nlp,size=small") == ["a"]
    assert names(store, label_selector="team=audio") == []
    assert names(store, since="2026-05-01T12:02:00Z") == ["c", "b"]
    assert names(store, until="2026-05-01T12:01:30Z") == ["a"]
    assert names(store, since="2026-05-01T14:01:00+02:00", until="2026-05-01T12:02:00Z") == [
        "b",
        "a",
    ]


def test_a_namespace_sees_only_its_own_records(store: HistoryStore) -> None:
    store.put(finished("shared-name", 1, namespace="team-a"))
    store.put(finished("shared-name", 2, namespace="team-b"))
    assert names(store, "team-a") == ["shared-name"]
    mine = store.get("team-a", "uid-team-a-shared-name")
    assert mine is not None
    assert mine.logs == {"0": "shared-name done\n"}
    assert mine.metrics.loss == [(1, 3.0), (10, 1.0)]
    assert store.get("team-a", "uid-team-b-shared-name") is None


def test_writing_a_record_again_replaces_it_and_its_labels(store: HistoryStore) -> None:
    store.put(finished("job", 1, labels={"stage": "one"}))
    store.put(finished("job", 5, phase="Failed", labels={"stage": "two"}))
    assert names(store, label_selector="stage=one") == []
    assert names(store, label_selector="stage=two") == ["job"]
    record = store.get("team-a", "uid-team-a-job")
    assert record is not None
    assert record.phase == "Failed"
    assert record.finished_at == T0 + timedelta(minutes=5)


def test_retention_prunes_by_age_and_keeps_the_newest_per_namespace(store: HistoryStore) -> None:
    for i in range(5):
        store.put(finished(f"a-{i}", minutes=i * 60 * 24))  # one a day
    store.put(finished("b-0", minutes=0, namespace="team-b"))
    now = (T0 + timedelta(days=4, minutes=1)).timestamp()
    # Older than 2.5 days: a-0, a-1 and b-0 go.
    assert store.prune(now, max_age_seconds=2.5 * 86400, max_per_namespace=None) == 3
    assert names(store) == ["a-4", "a-3", "a-2"]
    assert names(store, "team-b") == []
    store.put(finished("b-1", minutes=1, namespace="team-b"))
    assert store.prune(now, max_age_seconds=None, max_per_namespace=2) == 1
    assert names(store) == ["a-4", "a-3"]
    assert names(store, "team-b") == ["b-1"]  # another namespace's count is its own


def test_migrations_bring_an_empty_database_up_once(url: str) -> None:
    first = HistoryStore(url, migrate=False)
    assert first.migrate() == list(range(1, LATEST + 1))
    assert first.versions() == list(range(1, LATEST + 1))
    again = HistoryStore(url)  # a restart: nothing to apply
    assert again.migrate() == []
    assert again.versions() == list(range(1, LATEST + 1))


def test_migrations_upgrade_a_version_1_database_and_keep_its_records(url: str) -> None:
    old = HistoryStore(url, migrate=False)
    assert old.migrate(target=1) == [1]
    record = finished("from-v1", 1, labels={"team": "nlp"})
    summary = record.summary().model_dump(mode="json", by_alias=True)
    # A version 1 server wrote its rows without history_labels (which did not exist yet).
    with old._tx() as cur:
        cur.execute(
            "INSERT INTO history_records"
            " (uid, namespace, name, phase, sort_time, recorded_at, summary, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.uid,
                record.namespace,
                record.name,
                record.phase,
                record.sort_time(),
                0.0,
                json.dumps(summary),
                json.dumps({"logs": {"0": "v1 log\n"}}),
            ),
        )
    old.close()
    upgraded = HistoryStore(url)
    assert upgraded.versions() == list(range(1, LATEST + 1))
    assert names(upgraded, label_selector="team=nlp") == ["from-v1"]
    kept = upgraded.get("team-a", record.uid)
    assert kept is not None
    assert kept.logs == {"0": "v1 log\n"}
