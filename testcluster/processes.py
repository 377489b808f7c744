"""Child processes that never outlive the test cluster: process groups, atexit, death signal."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# prctl(2) option: deliver a signal to the child when the thread that forked it dies, so a
# SIGKILLed pytest or launcher (where atexit cannot run) still takes its servers down with it.
_PR_SET_PDEATHSIG = 1
# Loaded once here: dlopen() in the forked child could block on a lock another thread held.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL this child when its parent dies (Linux only)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (load-independent, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A /proc/PID/status memory figure in KiB (VmRSS: resident now, VmHWM: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll `check` until it returns True; raise TimeoutError naming `what` otherwise.

    Errors raised by `check` count as "not yet"; `alive` (e.g. Managed.check_alive) is called
    outside that net, so a server that died fails the wait at once with its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ProcessDied(RuntimeError):
    """A managed server exited while it should be running; the message holds its log tail."""


@dataclass
class Managed:
    """One server process, started in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's log, for error messages."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        """Raise ProcessDied with the log tail if the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise ProcessDied(
                f"{self.name} exited with code {code}; log {self.log}:\n{self.log_tail()}"
            )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL it after `grace` seconds."""
        pgid = self.popen.pid  # start_new_session=True makes the child its group's leader
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            try:
                self.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while a grandchild still holds the group: make sure.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


@dataclass
class Supervisor:
    """Starts servers in order and stops them in reverse order, also at interpreter exit."""

    log_dir: Path
    children: list[Managed] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.stop_all)

    def start(
        self, name: str, argv: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None
    ) -> Managed:
        """Start `argv` as server `name`; stdout and stderr go to <log_dir>/<name>.log."""
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # own process group: Ctrl-C in a terminal reaches us only
                preexec_fn=_die_with_parent,
            )
        child = Managed(name=name, popen=popen, log=log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        """Stop every server, newest first; safe to call more than once."""
        while self.children:
            self.children.pop().stop()
