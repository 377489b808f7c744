"""Worker processes under the launcher: the wrapper records exit codes, SIGTERM arrives, and a
recycled pid is never taken for a worker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from carina.platform.embedded.launcher import (
    Launcher,
    process_start_time,
    read_exit_code,
    run_paths,
)


def test_the_wrapper_records_the_exit_code_and_sigterm_reaches_the_worker(tmp_path: Path) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
        "time.sleep(30)\n"
    )
    launcher = Launcher([sys.executable, "-c", script])
    paths = run_paths(tmp_path, "ns", "demo", "uid")
    worker = launcher.start("uid", 0, 0, {"CARINA_EXIT_FILE": str(paths.exit_file(0, 0))}, paths)
    time.sleep(0.5)
    assert launcher.alive(worker)
    launcher.signal(worker, __import__("signal").SIGTERM)
    deadline = time.monotonic() + 10
    while launcher.alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not launcher.alive(worker)
    assert read_exit_code(paths.exit_file(0, 0)) == 75
    assert "worker 0, restart 0" in paths.log(0).read_text()


def test_a_recycled_pid_is_not_mistaken_for_the_worker() -> None:
    proc = subprocess.Popen(["sleep", "5"])
    try:
        assert process_start_time(proc.pid) is not None
        assert process_start_time(proc.pid) != "0"
    finally:
        proc.kill()
        proc.wait()
    assert process_start_time(proc.pid) is None
