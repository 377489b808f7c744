"""One job's broken spec stays with that job: it fails with InvalidSpec, the others go on."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from builders import make_job

from carina.platform.embedded import substrate as substrate_module
from carina.platform.embedded.launcher import Launcher, RunPaths
from carina.platform.embedded.store import Store, WorkerRow
from carina.platform.embedded.substrate import Substrate, SubstrateConfig
from carina.platform.planning.admission import Capacity

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingLauncher(Launcher):
    """Records the workers the substrate starts; no process runs."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []

    def prepare(self, job: Any, paths: RunPaths) -> None:
        pass

    def start(self, uid: str, index: int, restart: int, env: Any, paths: RunPaths) -> WorkerRow:
        self.started.append(uid)
        return WorkerRow(uid, index, restart, 0, "", time.time(), False, str(paths.root))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "carina.db")


@pytest.fixture
def launcher() -> RecordingLauncher:
    return RecordingLauncher()


@pytest.fixture
def substrate(tmp_path: Path, store: Store, launcher: RecordingLauncher) -> Substrate:
    # Its own connection, as the server's: the substrate notices other connections' writes.
    config = SubstrateConfig(state_dir=tmp_path, capacity=Capacity(cpus=8, memory_bytes=2**36))
    return Substrate(Store(store.path), launcher, config)


def stored(store: Store, name: str, **spec: Any) -> str:
    """A job written straight to the store, as an older version might have written it."""
    return store.create_job("default", dict(make_job(name).with_spec(**spec)), time.time()).uid


def status(store: Store, name: str) -> dict[str, Any]:
    row = store.get_job("default", name)
    assert row is not None
    result: dict[str, Any] = json.loads(row.status)
    return result


def failed(store: Store, name: str) -> dict[str, Any]:
    return next(c for c in status(store, name)["conditions"] if c["type"] == "Failed")


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"cpu": "abc"}, "spec.resources.cpu"),
        ({"memory": "-1Gi"}, "spec.resources.memory"),
        ({"memory": ""}, "spec.resources.memory"),
    ],
)
def test_a_stored_job_with_a_bad_quantity_fails_and_the_next_job_starts(
    store: Store,
    substrate: Substrate,
    launcher: RecordingLauncher,
    resources: dict[str, str],
    field: str,
) -> None:
    stored(store, "broken", resources=resources)
    good = stored(store, "good")
    substrate.reconcile_all(NOW)
    assert status(store, "broken")["phase"] == "Failed"
    condition = failed(store, "broken")
    assert condition["reason"] == "InvalidSpec"
    assert field in condition["message"]
    assert launcher.started == [good]
    assert status(store, "good")["phase"] == "Starting"
    broken = store.get_job("default", "broken")
    assert broken is not None
    events = store.events(broken.uid)
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidSpec")]


def test_an_invalid_job_is_failed_once_and_then_left_alone(
    store: Store, substrate: Substrate
) -> None:
    uid = stored(store, "broken", replicas=True)
    substrate.reconcile_all(NOW)
    first = status(store, "broken")
    substrate.reconcile_all(NOW)
    substrate.reconcile_all(NOW)
    assert status(store, "broken") == first
    assert len(store.events(uid)) == 1
    assert "spec.replicas" in failed(store, "broken")["message"]


def test_a_job_with_an_invalid_spec_can_still_be_deleted(
    store: Store, substrate: Substrate
) -> None:
    stored(store, "broken", checkpoint={"uri": "s3://bucket/a\x00b"})
    substrate.reconcile_all(NOW)
    store.mark_deleting("default", "broken", time.time())
    substrate.reconcile_all(NOW)
    assert store.get_job("default", "broken") is None


def test_a_finished_job_keeps_its_status_when_its_spec_no_longer_parses(
    store: Store, substrate: Substrate
) -> None:
    uid = stored(store, "done", replicas=True)
    store.write_status(uid, {"phase": "Succeeded", "completionTime": "2025-12-31T00:00:00Z"})
    substrate.reconcile_all(NOW)
    assert status(store, "done")["phase"] == "Succeeded"


def test_a_job_whose_demand_cannot_be_counted_fails_alone(
    store: Store,
    substrate: Substrate,
    launcher: RecordingLauncher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    odd = stored(store, "odd")
    good = stored(store, "good")
    count = substrate_module.gang_usage

    def demand(job: Any) -> Any:
        if job.metadata.uid == odd:
            raise ValueError("spec.resources.memory: not a quantity: '1Gb'")
        return count(job)

    monkeypatch.setattr(substrate_module, "gang_usage", demand)
    substrate.reconcile_all(NOW)
    assert failed(store, "odd")["reason"] == "InvalidSpec"
    assert "spec.resources.memory" in failed(store, "odd")["message"]
    assert launcher.started == [good]


def test_an_error_in_one_jobs_reconcile_leaves_the_others_running(
    store: Store,
    substrate: Substrate,
    launcher: RecordingLauncher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unlucky = stored(store, "unlucky")
    good = stored(store, "good")
    reconcile = substrate.reconcile

    def flaky(row: Any, *args: Any, **kwargs: Any) -> Any:
        if row.uid == unlucky:
            raise OSError("no space left on device")
        return reconcile(row, *args, **kwargs)

    monkeypatch.setattr(substrate, "reconcile", flaky)
    substrate.reconcile_all(NOW)
    assert launcher.started == [good]
    assert status(store, "unlucky") == {}  # tried again next pass, not failed
