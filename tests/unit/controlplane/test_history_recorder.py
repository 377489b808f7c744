"""The cluster's history recorder, event by event, against an in-memory stand-in of the API.

What the finalizer protocol promises: the finalizer goes on next to anyone else's, a
deleted job is recorded (with its pods' log tails) before the finalizer comes off, and a
record that cannot be written keeps the job held.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from carina.platform.controlplane.history_recorder import FINALIZER, ClusterRecorder
from carina.platform.history.store import HistoryStore


class FakeCustom:
    """TrainingJob patches as the API server takes them: merge patches, checked versions."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_namespaced_custom_object(self, *args: Any) -> None:
        self.patches.append(args[-1])


class FakeCore:
    def list_namespaced_event(self, namespace: str, field_selector: str) -> Any:
        event = SimpleNamespace(
            type="Normal",
            reason="Succeeded",
            message="2/2 workers succeeded",
            first_timestamp=None,
            last_timestamp=None,
            event_time=None,
            count=1,
            metadata=SimpleNamespace(creation_timestamp=None),
        )
        return SimpleNamespace(items=[event])

    def read_namespaced_pod_log(self, pod: str, namespace: str, tail_lines: int) -> str:
        return f"last words of {pod}\n"


class BrokenStore(HistoryStore):
    def put(self, record: Any) -> None:
        raise RuntimeError("the database is down")


def job(**meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "u-1",
            "namespace": "team-a",
            "name": "llm",
            "resourceVersion": "7",
            **meta,
        },
        "spec": {"replicas": 2},
        "status": {"phase": "Succeeded", "completionTime": "2026-05-01T12:00:00Z"},
    }


@pytest.fixture
def history(tmp_path: Path) -> HistoryStore:
    return HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")


def test_the_finalizer_goes_on_beside_others_and_only_on_the_version_read(
    history: HistoryStore,
) -> None:
    custom = FakeCustom()
    recorder = ClusterRecorder(custom, FakeCore(), history, log_lines=50)
    recorder.handle("ADDED", job(finalizers=["example.com/keep"]))
    assert custom.patches[0] == {
        "metadata": {"resourceVersion": "7", "finalizers": ["example.com/keep", FINALIZER]}
    }


def test_a_deleted_job_is_recorded_with_its_log_tails_before_it_is_let_go(
    history: HistoryStore,
) -> None:
    custom = FakeCustom()
    recorder = ClusterRecorder(custom, FakeCore(), history, log_lines=50)
    deleting = job(
        finalizers=["example.com/keep", FINALIZER], deletionTimestamp="2026-05-01T12:05:00Z"
    )
    recorder.handle("MODIFIED", deleting)
    record = history.get("team-a", "u-1")
    assert record is not None
    assert record.deleted_at is not None
    assert record.logs == {
        "0": "last words of llm-worker-0-r0\n",
        "1": "last words of llm-worker-1-r0\n",
    }
    assert [e.reason for e in record.events] == ["Succeeded"]
    assert custom.patches == [
        {"metadata": {"resourceVersion": "7", "finalizers": ["example.com/keep"]}}
    ]


def test_a_record_that_cannot_be_written_keeps_the_job_held(tmp_path: Path) -> None:
    custom = FakeCustom()
    broken = BrokenStore(f"sqlite:///{tmp_path / 'history.db'}")
    recorder = ClusterRecorder(custom, FakeCore(), broken, log_lines=50)
    recorder.handle(
        "MODIFIED", job(finalizers=[FINALIZER], deletionTimestamp="2026-05-01T12:05:00Z")
    )
    assert custom.patches == []  # the finalizer stays: tried again at the next listing


def test_a_job_gone_without_the_finalizer_is_still_recorded(history: HistoryStore) -> None:
    recorder = ClusterRecorder(FakeCustom(), FakeCore(), history, log_lines=50)
    recorder.handle("DELETED", job())
    record = history.get("team-a", "u-1")
    assert record is not None
    assert record.phase == "Succeeded"
    assert record.deleted_at is not None
    assert record.logs == {}  # its pods were not read: it is gone
