"""The operator as a test runs it: `python -m carina.operators` against the test cluster.

Each integration test that needs the operator runs its own subprocess, watching only the
test's namespace, so killing it is as real as it gets (`operator` fixture in conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from carina.testcluster import TestCluster
from carina.testcluster.processes import free_port, wait_until


class OperatorProcess:
    """`python -m carina.operators` against the test cluster, for one namespace."""

    def __init__(self, cluster: TestCluster, namespace: str, log_path: Path, **env: str):
        self.cluster, self.namespace, self.log_path = cluster, namespace, log_path
        self.port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "CARINA_OPERATOR_NAMESPACES": namespace,
            "CARINA_OPERATOR_PORT": str(self.port),
            "CARINA_OPERATOR_PROGRESS_INTERVAL": "0",
            "CARINA_OPERATOR_LOG_LEVEL": "DEBUG",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carina.operators"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.healthy, 30, "operator /healthz", alive=self._alive)
        return self

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
            return r.status == 200

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
