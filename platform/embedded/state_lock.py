"""One server per state folder: an exclusive flock on `<state>/carina.lock`, held for life.

Two substrates on one store would each adopt, signal and restart the other's workers, and
the one that stops last would stop them all. So `carina up` (and `carina run`'s embedded
server) claim the lock before they read the store or touch a worker, and a second one is
refused at once. The kernel drops the lock when its holder ends, however it ends (SIGKILL
included), so a `carina up` restarted after a crash claims it again. The file names the
holder (pid and URL) for the refusal to say where the first one answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = "carina.lock"


class StateInUse(Exception):
    """Another live process serves the state folder."""

    def __init__(self, state_dir: Path, pid: int | None, url: str | None) -> None:
        self.state_dir, self.pid, self.url = state_dir, pid, url
        who = f"carina up (pid {pid})" if pid else "another carina up"
        where = f" at {url}" if url else ""
        super().__init__(
            f"the state folder {state_dir} is served by {who}{where}: one folder, one server."
            " Use that one (--server), stop it first, or pass another --state-dir"
        )


class StateLock:
    """The claim on a state folder; released by `release`, or by the process ending."""

    def __init__(self, state_dir: Path) -> None:
        """Claim the folder now; StateInUse when another process holds it (nothing written)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        # No O_TRUNC: the holder's record must survive a refused claim. The descriptor is
        # not inherited (PEP 446), so workers never hold the lock after their server dies.
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self._fd)
            os.close(self._fd)
            self._fd = None
            pid, url = holder.get("pid"), holder.get("url")
            raise StateInUse(
                state_dir,
                pid if isinstance(pid, int) else None,
                url if isinstance(url, str) else None,
            ) from None
        self.record(None)

    def record(self, url: str | None) -> None:
        """Name this process (and the URL it serves) in the lock file; best effort."""
        assert self._fd is not None
        text = json.dumps({"pid": os.getpid(), "url": url}) + "\n"
        with contextlib.suppress(OSError):  # a full disk must not stop the server starting
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)

    def release(self) -> None:
        """Let another server claim the folder."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _holder(fd: int) -> dict[str, object]:
    """What the holder wrote in the lock file ({} when it has not yet, or wrote no JSON)."""
    try:
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
