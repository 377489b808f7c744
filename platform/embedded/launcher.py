"""Worker processes on this machine, started with the worker contract (`carina.workloads.contract`).

A worker is the entry process a pod runs, `carina.workloads.supervisor`, which starts one rank
per GPU the worker holds (`CUDA_VISIBLE_DEVICES` names them), or `resources.ranksPerWorker`
ranks on the CPU. Each worker runs under a tiny `/bin/sh` wrapper that records the worker's
exit code in a file. The wrapper and the worker form their own session, so they outlive a
`carina up` that is killed: a restarted `carina up` adopts them by pid (checked against the
process start time, so a recycled pid is never mistaken for a worker) and still learns their
exit code from the file. The wrapper defers SIGTERM until the worker has exited; SIGTERM goes
to the entry process, which relays it to every rank; each saves a checkpoint and exits 75.

On a full disk the wrapper cannot write the file; the exit code of a worker this process
started is then the one its Popen reaped (128+N for signal N, as a shell says it). Only a
worker with neither, one that died with an earlier `carina up`, reads as a lost node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from carina.platform.api.types import TrainingJob
from carina.platform.embedded.store import WorkerRow
from carina.platform.planning.render import spec_document, worker_context

# `trap : TERM INT` gives the shell a handler (children get the default back on exec) and
# makes it wait for the worker before running it; `$?` is then the worker's exit status.
_WRAPPER = 'trap : TERM INT HUP; "$@"; code=$?; echo $code > "$CARINA_EXIT_FILE"; exit $code'

# Exit codes of reaped children whose exit file could not be read, by that file's path:
# what `read_exit_code` answers when the wrapper could not write it (a full disk).
_REAPED: dict[Path, int] = {}


@dataclass(frozen=True)
class RunPaths:
    """Where one job's files live on this machine."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def log(self, index: int) -> Path:
        return self.root / "logs" / f"worker-{index}.log"

    def attempt(self, restart: int) -> Path:
        return self.root / "attempts" / str(restart)

    def exit_file(self, restart: int, index: int) -> Path:
        return self.attempt(restart) / f"worker-{index}.exit"

    def termination_log(self, restart: int, index: int) -> Path:
        return self.attempt(restart) / f"worker-{index}.termination"


def run_paths(state_dir: Path, namespace: str, name: str, uid: str) -> RunPaths:
    """The run folder of one job (the uid keeps a re-created job from resuming an old one)."""
    return RunPaths(state_dir / "jobs" / namespace / f"{name}-{uid[:8]}")


def checkpoint_uri(job: TrainingJob, paths: RunPaths) -> str:
    """The job's checkpoint URI, defaulting to the run folder."""
    return job.spec.checkpoint.uri or paths.checkpoints.resolve().as_uri()


def worker_env(
    job: TrainingJob,
    paths: RunPaths,
    index: int,
    restart: int,
    master_port: int,
    metrics_port: int,
    threads: int,
    gpus: Sequence[int] = (),
) -> dict[str, str]:
    """The worker contract's environment for one worker, plus what this machine adds."""
    ctx = worker_context(
        job,
        index,
        restart,
        master_addr="127.0.0.1",
        master_port=master_port,
        metrics_port=metrics_port,
        checkpoint=checkpoint_uri(job, paths),
        spec_path=str(paths.spec),
    )
    ctx = dataclasses.replace(ctx, termination_log=str(paths.termination_log(restart, index)))
    per_rank = str(max(1, threads // ctx.local_world_size))
    env = {
        **ctx.pod_env(),
        "CARINA_EXIT_FILE": str(paths.exit_file(restart, index)),
        # A thread per requested CPU, shared by the worker's ranks: without this each rank
        # starts a thread per core and the workers spend their time preempting each other.
        "OMP_NUM_THREADS": per_rank,
        "MKL_NUM_THREADS": per_rank,
        "PYTHONUNBUFFERED": "1",
    }
    if job.spec.resources.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


SUPERVISOR = ("-m", "carina.workloads.supervisor")


class Launcher:
    """Starts, signals and observes worker processes; reaps the ones it started itself.

    `rank_command` is what the worker's entry process runs for each rank (by default
    `python -m carina.workloads`; tests pass a stand-in).
    """

    def __init__(
        self, rank_command: Sequence[str] | None = None, base_env: Mapping[str, str] | None = None
    ):
        self.command = [sys.executable, *SUPERVISOR, *(rank_command or ())]
        self.base_env = dict(os.environ if base_env is None else base_env)
        self._children: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}

    def prepare(self, job: TrainingJob, paths: RunPaths) -> None:
        """Write the run folder's spec file (idempotent)."""
        paths.root.mkdir(parents=True, exist_ok=True)
        (paths.root / "logs").mkdir(exist_ok=True)
        tmp = paths.spec.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec_document(job)))
        os.replace(tmp, paths.spec)

    def start(
        self, uid: str, index: int, restart: int, env: Mapping[str, str], paths: RunPaths
    ) -> WorkerRow:
        """Start one worker; its output goes to the worker's log (appended across restarts)."""
        paths.attempt(restart).mkdir(parents=True, exist_ok=True)
        for stale in (paths.exit_file(restart, index), paths.termination_log(restart, index)):
            stale.unlink(missing_ok=True)
        _REAPED.pop(paths.exit_file(restart, index), None)
        log_path = paths.log(index)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"--- carina: worker {index}, restart {restart}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, "carina-worker", *self.command],
                env={**self.base_env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=paths.root,
            )
        self._children[proc.pid] = (proc, paths.exit_file(restart, index))
        return WorkerRow(
            uid=uid,
            index=index,
            restart=restart,
            pid=proc.pid,
            pid_start=process_start_time(proc.pid) or "",
            started_at=time.time(),
            stopping=False,
            dir=str(paths.root),
        )

    def alive(self, worker: WorkerRow) -> bool:
        """Whether the worker's process (the very one we started) still runs."""
        if worker.pid in self._children and self._collect(worker.pid):
            return False
        return process_start_time(worker.pid) == worker.pid_start and worker.pid_start != ""

    def signal(self, worker: WorkerRow, sig: signal.Signals) -> None:
        """Signal the worker; gone already is fine.

        SIGTERM goes to the worker's entry process alone, as the kubelet sends it to a
        container's first process: the entry process relays it to each rank once. Any other
        signal (SIGKILL) goes to the whole process group: wrapper, entry process and ranks.
        """
        if not self.alive(worker):
            return
        entry = _children(worker.pid) if sig == signal.SIGTERM else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if entry:
                for pid in entry:
                    os.kill(pid, sig)
            else:
                os.killpg(worker.pid, sig)

    def reap(self) -> None:
        """Collect exited children so none stays a zombie."""
        for pid in list(self._children):
            self._collect(pid)

    def _collect(self, pid: int) -> bool:
        """Reap the child if it has exited, keeping its code in case its exit file is missing."""
        proc, exit_file = self._children[pid]
        code = proc.poll()
        if code is None:
            return False
        del self._children[pid]
        if read_exit_code(exit_file) is None:
            _REAPED[exit_file] = 128 - code if code < 0 else code
        return True


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (Linux' /proc), or [] when unknown."""
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in raw.split()]


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it follow the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, not yet reaped
        return None
    return fields[19]


def read_exit_code(path: Path) -> int | None:
    """The exit code the wrapper recorded, else the one this process reaped, else None."""
    try:
        code = int(path.read_text().strip())
    except (OSError, ValueError):
        return _REAPED.get(path)
    _REAPED.pop(path, None)
    return code
