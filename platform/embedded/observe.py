"""Local workers and jobs in the words planning uses: pure functions, no effects.

`observe` reads a worker process's exit file and termination log into an ObservedWorker, as
the operator reads a pod.
"""

from __future__ import annotations

from datetime import UTC, datetime

from carina.platform.embedded.launcher import RunPaths, read_exit_code
from carina.platform.embedded.store import WorkerRow
from carina.platform.planning.observed import ObservedWorker


def observe(worker: WorkerRow, alive: bool, paths: RunPaths) -> ObservedWorker:
    """A local worker process in the words planning uses."""
    started = datetime.fromtimestamp(worker.started_at, UTC)
    termination = None
    term_file = paths.termination_log(worker.restart, worker.index)
    if term_file.exists():
        termination = term_file.read_text()[:4096] or None
    if alive:
        return ObservedWorker(
            index=worker.index,
            phase="Running",
            ready=True,
            restart=worker.restart,
            node="localhost",
            started_at=started,
            deleting=worker.stopping,
            termination_message=termination,
        )
    code = read_exit_code(paths.exit_file(worker.restart, worker.index))
    exit_file = paths.exit_file(worker.restart, worker.index)
    finished = (
        datetime.fromtimestamp(exit_file.stat().st_mtime, UTC) if exit_file.exists() else None
    )
    if code is None:
        # Gone without a word: the machine restarted or someone killed the wrapper too.
        return ObservedWorker(
            index=worker.index,
            phase="Failed",
            ready=False,
            restart=worker.restart,
            reason="NodeLost",
            node="localhost",
            started_at=started,
            deleting=worker.stopping,
        )
    return ObservedWorker(
        index=worker.index,
        phase="Succeeded" if code == 0 else "Failed",
        ready=False,
        restart=worker.restart,
        exit_code=code,
        node="localhost",
        termination_message=termination,
        started_at=started,
        finished_at=finished,
        deleting=worker.stopping,
    )
