"""`carina up` as a real process for integration and e2e tests, and ways to hurt it.

`CarinaUp(state_dir, worker_command)` starts the control plane with the embedded
substrate on a free port; `kill()` stops it like a crash would (SIGKILL) and `start()`
brings it back on the same state. `worker_pids` finds a job's worker processes the way an
operator on the machine would: by their environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from carina.platform.cli.client import ApiError, CarinaClient

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
STANDIN_WORKER = [sys.executable, str(ROOT / "tests" / "integration" / "standin_worker.py")]
REAL_WORKER = [sys.executable, "-m", "carina.workloads"]


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CarinaUp:
    """One `carina up` process over a state folder (restartable)."""

    def __init__(
        self,
        state_dir: Path,
        worker_command: Sequence[str],
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CARINA_WORKER_COMMAND": __import__("json").dumps(list(worker_command)),
            "CARINA_RECONCILE_SECONDS": "0.2",
            "CARINA_STOP_GRACE_SECONDS": "20",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = log or state_dir / "carina-up.log"

    def command(self, port: int | None = None) -> list[str]:
        """The `carina up` command line for this state folder (on `port`, default its own)."""
        return [
            sys.executable,
            "-m",
            "carina.platform",
            "up",
            "--port",
            str(self.port if port is None else port),
            "--state-dir",
            str(self.state_dir),
        ]

    def start(self) -> CarinaUp:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
            )
        wait_for(lambda: CarinaClient(self.url).healthy() or self._died(), 30, "carina up")
        return self

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"carina up exited: {self.log.read_text()[-3000:]}")
        return False

    def client(self) -> CarinaClient:
        token = (self.state_dir / "token").read_text().strip()
        return CarinaClient(self.url, token)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the control plane (SIGKILL: a crash; workers keep running)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)

    def stop(self) -> None:
        """A clean shutdown, then make sure no worker of this state folder survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in worker_pids(self.state_dir):
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)  # its wrapper, entry process, ranks


@contextlib.contextmanager
def running(
    state_dir: Path, worker_command: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[CarinaUp]:
    """A started `carina up` for the length of the block, stopped (workers too) after it."""
    up = CarinaUp(state_dir, worker_command, env=env).start()
    try:
        yield up
    finally:
        up.stop()


def log_events(log: str, name: str | None = None) -> list[dict[str, Any]]:
    """Rank 0's JSON event lines in a worker log (`[rank 0] ` tags allowed), of one kind."""
    import json

    found = []
    for line in log.splitlines():
        line = line.removeprefix("[rank 0] ")
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if name is None or event.get("event") == name:
            found.append(event)
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )


def worker_pids(state_dir: Path, job: str | None = None, rank: int | None = None) -> list[int]:
    """The ranks (training processes) of workers started for jobs under `state_dir`.

    Not their wrappers nor their entry processes: a rank is the process with a RANK.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        env = _environ(pid)
        if not env.get("CARINA_SPEC", "").startswith(str(state_dir)):
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0 == b"/bin/sh":
            continue
        if job is not None and env.get("CARINA_JOB") != job:
            continue
        if "RANK" not in env or (rank is not None and env["RANK"] != str(rank)):
            continue
        found.append(pid)
    return found


def phase(client: CarinaClient, namespace: str, name: str) -> str | None:
    try:
        return (client.get(namespace, name).get("status") or {}).get("phase")
    except ApiError:
        return None


def wait_for_phase(
    client: CarinaClient,
    name: str,
    phases: Sequence[str],
    timeout: float,
    namespace: str = "default",
) -> dict[str, Any]:
    """Wait until the job reaches one of `phases`; its object then."""

    def reached() -> dict[str, Any] | None:
        job = client.get(namespace, name)
        return job if (job.get("status") or {}).get("phase") in phases else None

    return wait_for(reached, timeout, f"{namespace}/{name} to reach {'/'.join(phases)}")


def wait_for_step(
    client: CarinaClient, name: str, step: int, timeout: float, namespace: str = "default"
) -> int:
    def at_least() -> int:
        progress = (client.get(namespace, name).get("status") or {}).get("progress") or {}
        return int(progress.get("step", 0)) if progress.get("step", 0) >= step else 0

    return wait_for(at_least, timeout, f"{namespace}/{name} to reach step {step}")
