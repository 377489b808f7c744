"""The SQLite store: what the API writes and what the substrate writes never clobber each other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import make_job

from carina.platform.embedded.store import Conflict, Sample, Store, WorkerRow


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "carina.db")


def test_a_created_job_reads_back_as_the_api_object(store: Store) -> None:
    row = store.create_job("team-a", make_job("demo"), now=1000.0)
    obj = json.loads(row.object_json())
    assert obj["apiVersion"] == "carina.dev/v1alpha1"
    assert obj["metadata"]["namespace"] == "team-a"
    assert obj["metadata"]["creationTimestamp"] == "1970-01-01T00:16:40Z"
    assert obj["spec"]["replicas"] == 1
    assert obj["status"] == {}


def test_names_are_unique_per_namespace(store: Store) -> None:
    store.create_job("team-a", make_job("demo"), now=1.0)
    store.create_job("team-b", make_job("demo"), now=1.0)
    with pytest.raises(Conflict):
        store.create_job("team-a", make_job("demo"), now=2.0)


def test_a_spec_change_survives_a_concurrent_status_write(store: Store) -> None:
    row = store.create_job("ns", make_job("demo"), now=1.0)
    store.update_spec("ns", "demo", {"suspend": True})
    store.write_status(row.uid, {"phase": "Running"})
    obj = json.loads(store.get_job("ns", "demo").object_json())
    assert obj["spec"]["suspend"] is True
    assert obj["metadata"]["generation"] == 2
    assert obj["status"] == {"phase": "Running"}


def test_an_unchanged_spec_keeps_its_generation(store: Store) -> None:
    store.create_job("ns", make_job("demo").with_spec(suspend=True), now=1.0)
    row = store.update_spec("ns", "demo", {"suspend": True})
    assert json.loads(row.metadata)["generation"] == 1


def test_admission_order_is_priority_then_age(store: Store) -> None:
    store.create_job("ns", make_job("old"), now=1.0)
    store.create_job("ns", make_job("urgent").with_spec(priority=10), now=3.0)
    store.create_job("ns", make_job("new"), now=2.0)
    assert [r.name for r in store.jobs_in_admission_order()] == ["urgent", "old", "new"]


def test_removing_a_job_forgets_its_workers_events_and_samples(store: Store) -> None:
    row = store.create_job("ns", make_job("demo"), now=1.0)
    store.add_worker(WorkerRow(row.uid, 0, 0, 123, "456", 1.0, False, "/tmp"))
    store.add_event(row.uid, 1.0, "Normal", "Created", "started")
    store.add_sample(row.uid, Sample(1, 1.0, 2.5, 100.0))
    store.remove_job(row.uid)
    assert store.get_job("ns", "demo") is None
    assert store.workers(row.uid) == []
    assert store.events(row.uid) == []
    assert store.samples(row.uid) == []


def test_the_store_outlives_its_process(tmp_path: Path) -> None:
    first = Store(tmp_path / "carina.db")
    row = first.create_job("ns", make_job("demo"), now=1.0)
    first.add_worker(WorkerRow(row.uid, 1, 2, 4242, "99", 1.0, True, "/runs/x"))
    again = Store(tmp_path / "carina.db")
    assert again.workers(row.uid) == [WorkerRow(row.uid, 1, 2, 4242, "99", 1.0, True, "/runs/x")]


def test_a_page_is_the_jobs_objects_by_name_with_the_last_name_when_more_follow(
    store: Store,
) -> None:
    for name in ("c", "a", "e", "b", "d"):
        row = store.create_job("ns", make_job(name), now=1.0)
        store.write_status(row.uid, {"phase": "Running"})
    store.create_job("other", make_job("z"), now=1.0)
    items, last = store.page_json("ns", 2)
    assert [json.loads(f"[{items}]")[i]["metadata"]["name"] for i in (0, 1)] == ["a", "b"]
    assert last == "b"
    assert items == ",".join(r.object_json() for r in store.list_jobs("ns", 2))
    items, last = store.page_json("ns", 3, after="b")
    assert [j["metadata"]["name"] for j in json.loads(f"[{items}]")] == ["c", "d", "e"]
    assert last is None
    assert store.page_json("ns", 3, after="e") == ("", None)


def test_a_page_asked_again_is_never_older_than_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "carina.db")
    other = Store(tmp_path / "carina.db")  # another connection, as another process would be
    for name in ("a", "b", "c"):
        store.create_job("ns", make_job(name), now=1.0)

    def phases() -> list[str | None]:
        items, _ = store.page_json("ns", 10)
        return [(j.get("status") or {}).get("phase") for j in json.loads(f"[{items}]")]

    first = store.page_json("ns", 10)
    assert store.page_json("ns", 10) is first  # nothing written: the same text again
    uid_b = store.get_job("ns", "b").uid  # type: ignore[union-attr]
    store.write_status(uid_b, {"phase": "Running"})  # through this connection
    assert phases() == [None, "Running", None]
    uid_c = other.get_job("ns", "c").uid  # type: ignore[union-attr]
    other.write_status(uid_c, {"phase": "Failed"})  # through another one
    assert phases() == [None, "Running", "Failed"]
    other.create_job("ns", make_job("d"), now=2.0)
    assert store.page_json("ns", 3) == (store.page_json("ns", 3)[0], "c")
    assert [j["metadata"]["name"] for j in json.loads(f"[{store.page_json('ns', 10)[0]}]")] == [
        "a",
        "b",
        "c",
        "d",
    ]
