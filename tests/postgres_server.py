"""A real PostgreSQL server for tests: initdb and postgres in a temporary folder, on loopback.

Debian's `postgresql` package puts the binaries in /usr/lib/postgresql/<major>/bin (not on
PATH). PostgreSQL refuses to run as root, so as root the folder is given to the `postgres`
user (or `nobody`) and the server runs as that user. The server dies with the test process
(a parent-death signal) and `stop()` removes its folder.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from carina.testcluster.processes import free_port

SUPERUSER = "carina"
_PR_SET_PDEATHSIG = 1


class PostgresMissing(Exception):
    """No PostgreSQL server binaries on this machine."""


def postgres_bin_dir() -> Path:
    """The folder of initdb and postgres: PATH first, then Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for folder in versions:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    raise PostgresMissing(
        "PostgreSQL server binaries not found (initdb, postgres): apt-get install postgresql"
        " (tools/tools.mk DEBIAN_PACKAGES)"
    )


def _run_as() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user
    raise PostgresMissing("running as root and neither a postgres nor a nobody user exists")


def _die_with_parent() -> None:
    # After the switch of user (which clears the setting): the server dies with pytest.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class PostgresServer:
    """One PostgreSQL server; `database()` makes a fresh, empty database and gives its URL."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="carina-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "postgres.log"

    def _user_args(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        data = self.root / "data"
        init = subprocess.run(
            [
                str(self.bin / "initdb"),
                *("-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"),
                "--no-sync",
            ],
            capture_output=True,
            check=False,
            **self._user_args(),
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout.decode()}{init.stderr.decode()}")
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                *("-D", str(data), "-p", str(self.port), "-k", str(self.root)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            **self._user_args(),
        )
        self._wait_ready(60)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-3000:]}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
