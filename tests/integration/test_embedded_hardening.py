"""The embedded platform under misuse: a second `carina up` on its state, a port already
taken, and the state folder's disk running full. Real `carina up`, real stand-in workers.

The full disk is a small tmpfs mounted for the test (root and mount(8) are needed; without
them the test is skipped), so the machine's own disk is never filled.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from builders import make_job
from embedded_platform import (
    STANDIN_WORKER,
    CarinaUp,
    running,
    wait_for,
    wait_for_phase,
    wait_for_step,
    worker_pids,
)

from carina.platform.cli.client import ApiError

NS = "default"


def standin_job(name: str, steps: int, replicas: int = 2, max_restarts: int = 3):
    return (
        make_job(name)
        .with_replicas(replicas)
        .with_pretrain(steps=steps)
        .with_spec(
            checkpoint={"intervalSteps": 10},
            failurePolicy={"backoffSeconds": 0, "maxRestarts": max_restarts},
        )
    )


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"STANDIN_STEP_SECONDS": "0.05", "CARINA_CAPACITY_CPUS": "4"},
    ) as up:
        yield up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_second_carina_up_on_the_same_state_is_refused_and_stops_no_worker(
    platform: CarinaUp, tmp_path: Path
) -> None:
    client = platform.client()
    client.create(NS, standin_job("first", steps=160))
    wait_for_step(client, "first", 10, 60)
    workers = sorted(worker_pids(platform.state_dir, "first"))
    assert workers
    assert platform.proc is not None
    for port in (platform.port, free_port()):  # its port (taken), and a free one
        started = time.monotonic()
        second = subprocess.run(
            platform.command(port), env=platform.env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1, second.stdout + second.stderr
        said = one_line(second.stderr)
        assert f"is served by carina up (pid {platform.proc.pid}) at {platform.url}" in said
        assert "Traceback" not in said
        assert time.monotonic() - started < 30
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(dict(standin_job("second", steps=20))))
    run = ["run", str(manifest), "--embedded", "--state-dir", str(platform.state_dir)]
    embedded = subprocess.run(
        [sys.executable, "-m", "carina.platform", *run],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert embedded.returncode == 1, embedded.stdout + embedded.stderr
    assert f"at {platform.url}" in one_line(embedded.stderr)
    assert sorted(worker_pids(platform.state_dir, "first")) == workers
    job = wait_for_phase(client, "first", ["Succeeded", "Failed"], 90)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restarts"] == 0
    assert not [e for e in client.events(NS, "first") if e["type"] == "Warning"]


def test_a_carina_up_that_cannot_listen_stops_no_worker(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, standin_job("kept", steps=160))
    wait_for_step(client, "kept", 10, 60)
    platform.kill(signal.SIGKILL)  # a crash: the workers keep training, the lock is free
    workers = sorted(worker_pids(platform.state_dir, "kept"))
    assert workers
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", platform.port))
        squatter.listen()
        again = subprocess.run(
            platform.command(), env=platform.env, capture_output=True, text=True, timeout=60
        )
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"cannot listen on 127.0.0.1:{platform.port}" in one_line(again.stderr)
    assert sorted(worker_pids(platform.state_dir, "kept")) == workers
    platform.start()  # the lock was released with the process that could not listen
    job = wait_for_phase(platform.client(), "kept", ["Succeeded", "Failed"], 90)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restarts"] == 0


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of our own, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; remove it to give the room back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = bytes(64 * 1024)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def truncate_wal(db: Path) -> None:
    """Fold the WAL into the database and truncate it, so that the next write must grow it."""

    def folded() -> bool:
        with sqlite3.connect(db, timeout=10) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    wait_for(folded, 30, "a WAL checkpoint")


def readyz(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=10)


def test_a_full_disk_answers_503_storage_full_and_crashes_keep_their_exit_codes(
    small_disk: Path, tmp_path: Path
) -> None:
    up = CarinaUp(
        small_disk / "state",
        STANDIN_WORKER,
        env={"STANDIN_STEP_SECONDS": "0.05", "CARINA_CAPACITY_CPUS": "4"},
        log=tmp_path / "carina-up.log",
    ).start()
    try:
        client = up.client()
        client.create(NS, standin_job("full", steps=200, replicas=1, max_restarts=20))
        wait_for_step(client, "full", 10, 60)
        truncate_wal(up.state_dir / "carina.db")
        filler = fill(small_disk)

        # The worker cannot write its progress and crashes; the substrate cannot record it.
        not_ready = wait_for(
            lambda: (r := readyz(up.url)).status_code == 503 and r, 60, "/readyz to refuse"
        )
        assert not_ready.json()["detail"]["reason"] == "StorageFull"
        assert "no room to write" in not_ready.json()["detail"]["message"]
        with pytest.raises(ApiError) as refused:
            client.create(NS, standin_job("more", steps=20))
        assert (refused.value.status, refused.value.reason) == (503, "StorageFull")
        assert client.get(NS, "full")["metadata"]["name"] == "full"  # reads go on
        wait_for(lambda: not worker_pids(up.state_dir, "full"), 30, "the worker to crash")

        filler.unlink()
        wait_for(lambda: readyz(up.url).status_code == 200, 30, "/readyz to recover")
        job = wait_for_phase(client, "full", ["Succeeded", "Failed"], 120)
        status = job["status"]
        assert status["phase"] == "Succeeded", status
        counts = status["restartsByReason"]
        assert counts["infrastructure"] == 0, counts  # not a lost node
        assert counts["application"] + counts["preemption"] >= 1, counts
        messages = [e["message"] for e in client.events(NS, "full") if e["type"] == "Warning"]
        assert any("exited with code" in m for m in messages), messages
        client.create(NS, standin_job("after", steps=20, replicas=1))  # writes work again
    finally:
        up.stop()


@pytest.mark.parametrize(
    ("tokens", "says"),
    [
        ("tokens: [{token: abc, namespaces: default}]", "namespaces"),
        ("tokens: [unclosed", "YAML"),
    ],
)
def test_a_malformed_tokens_file_stops_carina_up_with_a_clear_error(
    tmp_path: Path, tokens: str, says: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "tokens.yaml").write_text(tokens + "\n")
    up = CarinaUp(state, STANDIN_WORKER)
    result = subprocess.run(
        up.command(up.port), env=up.env, capture_output=True, text=True, timeout=60, cwd=state
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tokens file is not valid" in result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
