"""Entry points started as processes: what a user sees when they run them wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_operator_without_a_cluster_says_so_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(tmp_path / "missing-kubeconfig")
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "carina.platform", "operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no cluster to talk to" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_operator_exits_with_the_variable_at_fault():
    result = subprocess.run(
        [sys.executable, "-m", "carina.operators"],
        env={**os.environ, "CARINA_OPERATOR_PROGRESS_TIMEOUT": "-1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "CARINA_OPERATOR_PROGRESS_TIMEOUT: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr
