"""The embedded substrate's one progress channel: rank 0's /metrics, then its final word.

No process and no socket: the launcher starts nothing and the scrape is a stand-in that serves
a text (`Substrate.fetch_metrics`); the HTTP side is tests/integration/processes/
test_embedded_progress.py.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import make_job

from carina.platform.embedded.launcher import Launcher, RunPaths, run_paths
from carina.platform.embedded.store import Store, WorkerRow
from carina.platform.embedded.substrate import Substrate, SubstrateConfig
from carina.platform.planning.admission import Capacity
from carina.workloads.contract import TerminationMessage

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = 'job="llm",namespace="default",rank="0"'


class Workers(Launcher):
    """Starts no process: a started worker runs until the test says it exited."""

    def __init__(self) -> None:
        super().__init__(["true"])
        self.running: set[tuple[str, int]] = set()

    def prepare(self, job: Any, paths: RunPaths) -> None:
        pass

    def start(self, uid: str, index: int, restart: int, env: Any, paths: RunPaths) -> WorkerRow:
        self.running.add((uid, index))
        return WorkerRow(uid, index, restart, 0, "", time.time(), False, str(paths.root))

    def alive(self, worker: WorkerRow) -> bool:
        return (worker.uid, worker.index) in self.running

    def signal(self, worker: WorkerRow, sig: signal.Signals) -> None:
        pass


class Endpoint:
    """What rank 0 serves; the URLs the substrate asked for."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.asked: list[str] = []

    def __call__(self, url: str) -> str | None:
        self.asked.append(url)
        return self.text


def metrics(step: int, saved: int = 0, damaged: str = "") -> str:
    text = (
        f"carina_worker_step{{{LABELS}}} {step}\n"
        f"carina_worker_total_steps{{{LABELS}}} 60\n"
        f"carina_worker_loss{{{LABELS}}} 2.5\n"
        f"carina_worker_tokens_per_second{{{LABELS}}} 1000.0\n"
        f"carina_checkpoint_last_step{{{LABELS}}} {saved}\n"
    )
    if damaged:
        text += (
            f'carina_checkpoint_damaged{{{LABELS},step="{damaged}",uri="{damaged}-uri",'
            'file="model.safetensors",reason="size 1000 bytes"} 1\n'
        )
    return text


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, Workers, Endpoint, Substrate, str]:
    store = Store(tmp_path / "carina.db")
    workers = Workers()
    config = SubstrateConfig(state_dir=tmp_path, capacity=Capacity(cpus=8, memory_bytes=2**36))
    substrate = Substrate(Store(store.path), workers, config)
    endpoint = Endpoint()
    substrate.fetch_metrics = endpoint
    job = make_job("llm").with_replicas(2).with_spec(checkpoint={"uri": "file:///c/llm"})
    uid = store.create_job("default", dict(job), time.time()).uid
    substrate.reconcile_all(NOW)  # the gang is created
    return store, workers, endpoint, substrate, uid


def status(store: Store) -> dict[str, Any]:
    row = store.get_job("default", "llm")
    assert row is not None
    result: dict[str, Any] = json.loads(row.status)
    return result


def corrupt(store: Store, uid: str) -> list[str]:
    return [e.message for e in store.events(uid) if e.reason == "CheckpointCorrupt"]


def test_progress_checkpoints_and_samples_come_from_rank_zeros_metrics_endpoint(
    setup: tuple[Store, Workers, Endpoint, Substrate, str],
) -> None:
    store, _, endpoint, substrate, uid = setup
    row = store.get_job("default", "llm")
    assert row is not None
    port = json.loads(row.runtime)["metricsPorts"]["0"]
    endpoint.text = metrics(12, saved=10)
    substrate.reconcile_all(NOW + timedelta(seconds=1))
    assert endpoint.asked[-1] == f"http://127.0.0.1:{port}/metrics"  # worker 0's port
    progress = status(store)["progress"]
    assert (progress["step"], progress["totalSteps"], progress["loss"]) == (12, 60, 2.5)
    assert progress["tokensPerSecond"] == 1000.0
    assert status(store)["lastCheckpoint"] == {
        "step": 10,
        "uri": "file:///c/llm/step-00000010",
        "time": "2026-01-01T00:00:01Z",
    }
    assert [s.step for s in store.samples(uid)] == [12]

    endpoint.text = None  # no answer: no news, status keeps what it knows
    substrate.reconcile_all(NOW + timedelta(seconds=2))
    assert status(store)["progress"]["step"] == 12
    endpoint.text = metrics(0, saved=10)  # rank 0 restarted, still loading: no step yet
    substrate.reconcile_all(NOW + timedelta(seconds=3))
    assert status(store)["progress"]["step"] == 12
    assert [s.step for s in store.samples(uid)] == [12]


def test_a_damaged_checkpoint_on_rank_zeros_endpoint_is_one_warning(
    setup: tuple[Store, Workers, Endpoint, Substrate, str],
) -> None:
    store, _, endpoint, substrate, uid = setup
    endpoint.text = metrics(12, saved=10, damaged="20")
    substrate.reconcile_all(NOW + timedelta(seconds=1))
    assert corrupt(store, uid) == [
        "checkpoint at step 20 is damaged and was passed over for an older one:"
        " model.safetensors: size 1000 bytes (20-uri)"
    ]
    assert status(store)["damagedCheckpoints"][0]["step"] == 20
    substrate.reconcile_all(NOW + timedelta(seconds=2))
    assert len(corrupt(store, uid)) == 1


def test_the_final_step_comes_from_rank_zeros_termination_message(
    setup: tuple[Store, Workers, Endpoint, Substrate, str], tmp_path: Path
) -> None:
    store, workers, endpoint, substrate, uid = setup
    endpoint.text = metrics(55, saved=50)
    substrate.reconcile_all(NOW + timedelta(seconds=1))
    assert status(store)["progress"]["step"] == 55
    # Both workers finish; the endpoint goes with them and rank 0's final word stays.
    workers.running.clear()
    paths = run_paths(tmp_path, "default", "llm", uid)
    said = TerminationMessage(
        step=60, total_steps=60, loss=0.5, checkpoint_step=60, checkpoint_uri="file:///c/llm/60"
    )
    paths.attempt(0).mkdir(parents=True, exist_ok=True)
    paths.termination_log(0, 0).write_text(said.to_text())
    for index in (0, 1):
        paths.exit_file(0, index).write_text("0\n")
    substrate.reconcile_all(NOW + timedelta(seconds=2))
    final = status(store)
    assert final["phase"] == "Succeeded"
    assert (final["progress"]["step"], final["progress"]["loss"]) == (60, 0.5)
    assert final["lastCheckpoint"]["step"] == 60
