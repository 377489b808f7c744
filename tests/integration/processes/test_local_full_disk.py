"""A full disk at the store and the launcher: writes fail with StorageFull and recover, and a
worker whose wrapper could not record its exit code keeps it anyway."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from builders import make_job

from carina.platform.embedded.launcher import Launcher, RunPaths, read_exit_code
from carina.platform.embedded.store import StorageFull, Store, WorkerRow, storage_full


def fill_to_the_last_page(store: Store) -> int:
    """Cap the database at its size (SQLite's SQLITE_FULL) and write until a write fails."""
    db = store._db()
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 2}")
    for i in range(10_000):
        try:
            store.create_job("team-a", make_job(f"job-{i}"), now=float(i))
        except StorageFull:
            return i
    raise AssertionError("the capped database never filled up")


def test_a_write_on_a_full_disk_raises_storage_full_and_the_next_one_works_again(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "carina.db")
    written = fill_to_the_last_page(store)
    assert store.full
    assert "database or disk is full" in store.full
    assert len(store.list_jobs("team-a")) == written  # reads go on, nothing half-written
    store._db().execute("PRAGMA max_page_count = 1000000")  # the disk has room again
    store.create_job("team-a", make_job("after"), now=1.0)
    assert store.full is None
    assert store.get_job("team-a", "after") is not None


def test_check_writable_clears_the_full_mark_once_the_folder_has_room(tmp_path: Path) -> None:
    store = Store(tmp_path / "carina.db")
    store.check_writable()  # never full: nothing to probe
    store.full = "database or disk is full"
    store.check_writable()
    assert store.full is None
    assert not list(tmp_path.glob(".write-probe*"))


def test_only_no_space_errors_count_as_a_full_disk() -> None:
    assert storage_full(OSError(28, "No space left on device"))
    assert storage_full(OSError(122, "Disk quota exceeded"))
    assert not storage_full(OSError(13, "Permission denied"))
    assert not storage_full(sqlite3.OperationalError("database is locked"))


def start(tmp_path: Path, script: str) -> tuple[Launcher, RunPaths, WorkerRow]:
    """A worker running `script`, whose wrapper cannot write its exit file."""
    launcher = Launcher()
    launcher.command = [sys.executable, "-c", script]
    paths = RunPaths(tmp_path / "run")
    exit_file = paths.exit_file(0, 0)
    worker = launcher.start("uid", 0, 0, {"CARINA_EXIT_FILE": str(exit_file)}, paths)
    exit_file.mkdir()  # `echo $code > exit_file` now fails, as it does on a full disk
    return launcher, paths, worker


def wait_until_gone(launcher: Launcher, worker: WorkerRow) -> None:
    deadline = time.monotonic() + 30
    while launcher.alive(worker):
        assert time.monotonic() < deadline, "the worker did not exit"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ("import time; time.sleep(0.3); raise SystemExit(3)", 3),
        ("import os, signal, time; time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)", 137),
    ],
    ids=["exit-3", "killed"],
)
def test_a_reaped_worker_keeps_its_exit_code_without_its_exit_file(
    tmp_path: Path, script: str, code: int
) -> None:
    launcher, paths, worker = start(tmp_path, script)
    wait_until_gone(launcher, worker)
    assert read_exit_code(paths.exit_file(0, 0)) == code


def test_a_killed_wrapper_reads_as_the_signal_a_shell_would_report(tmp_path: Path) -> None:
    launcher, paths, worker = start(tmp_path, "import time; time.sleep(60)")
    launcher.signal(worker, signal.SIGKILL)  # the whole group: wrapper and worker
    wait_until_gone(launcher, worker)
    assert read_exit_code(paths.exit_file(0, 0)) == 128 + signal.SIGKILL


def test_a_worker_this_process_never_started_has_no_exit_code(tmp_path: Path) -> None:
    assert read_exit_code(RunPaths(tmp_path).exit_file(0, 0)) is None
