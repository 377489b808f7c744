"""A local worker process in planning's words: what its exit file and termination log say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carina.platform.embedded.launcher import run_paths
from carina.platform.embedded.observe import observe
from carina.platform.embedded.store import WorkerRow


@pytest.fixture
def paths(tmp_path: Path):
    p = run_paths(tmp_path, "ns", "demo", "uid")
    p.attempt(2).mkdir(parents=True)
    return p


def worker(stopping: bool = False) -> WorkerRow:
    return WorkerRow("uid", 1, 2, 4242, "99", 1_700_000_000.0, stopping, "/runs/x")


def test_a_live_process_is_a_ready_running_worker(paths) -> None:
    seen = observe(worker(), alive=True, paths=paths)
    assert (seen.index, seen.phase, seen.ready, seen.restart) == (1, "Running", True, 2)


def test_exit_zero_is_succeeded(paths) -> None:
    paths.exit_file(2, 1).write_text("0\n")
    seen = observe(worker(), alive=False, paths=paths)
    assert seen.phase == "Succeeded"
    assert seen.exit_code == 0
    assert seen.finished_at is not None


def test_a_preempted_worker_reports_its_checkpoint(paths) -> None:
    paths.exit_file(2, 1).write_text("75\n")
    ack = {"checkpoint": {"step": 40, "uri": "file:///ckpt/step-40"}}
    paths.termination_log(2, 1).write_text(json.dumps(ack))
    seen = observe(worker(), alive=False, paths=paths)
    assert seen.phase == "Failed"
    assert seen.exit_code == 75
    assert json.loads(seen.termination_message or "{}") == ack


def test_a_worker_gone_without_an_exit_code_reads_as_a_lost_node(paths) -> None:
    seen = observe(worker(), alive=False, paths=paths)
    assert seen.phase == "Failed"
    assert seen.exit_code is None
    assert seen.reason == "NodeLost"


def test_a_worker_being_stopped_is_marked_deleting(paths) -> None:
    assert observe(worker(stopping=True), alive=True, paths=paths).deleting
