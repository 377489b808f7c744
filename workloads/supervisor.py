"""`python -m carina.workloads.supervisor [RANK COMMAND...]`: a worker's entry process.

The pod (or the embedded platform's worker) runs this process; it starts `LOCAL_WORLD_SIZE`
ranks of `python -m carina.workloads` (or of the command given), one per GPU, each with
the contract's per-rank environment, and:

- forwards SIGTERM (and SIGINT) to every rank: each saves at the next step boundary, the
  ranks agree on it, and global rank 0 acknowledges the checkpoint and its last step;
- when a rank fails first, stops the others (SIGTERM, then SIGKILL after
  `CARINA_SUPERVISOR_GRACE` seconds, default 15: a gang with a dead rank cannot finish a
  collective) and exits with the failing rank's code, so a permanent code (64-66) still
  fails the job and a crash still restarts it; a rank killed by signal N counts as 128 + N;
- passes each rank's output through to its own stdout, line by line, prefixed with
  `[rank N]` when the worker has more than one rank, and keeps each rank's last lines;
- writes the worker's termination message (`TerminationMessage`) once every rank is gone:
  global rank 0's final word (its last step, total steps and loss, and its newest
  checkpoint, on a success or after SIGTERM), and on a failure the first failing rank, its
  exit code and its last log lines.

The process and its ranks share one process group, so a signal to the group (the embedded
platform's SIGKILL) reaches them all. Standard library only: it must start even where the
training stack cannot.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from carina.workloads.contract import (
    CARINA_TERMINATION_LOG,
    DEFAULT_TERMINATION_LOG,
    ContractError,
    ExitCode,
    TerminationMessage,
    WorkerContext,
    exit_code_of,
)

RANK_COMMAND = (sys.executable, "-m", "carina.workloads")
TAIL_LINES = 40
DEFAULT_GRACE_SECONDS = 15.0


@dataclass
class Rank:
    """One started rank."""

    local_rank: int
    rank: int
    proc: subprocess.Popen[bytes]
    termination_file: Path
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES)
    )
    code: int | None = None
    pump: threading.Thread | None = None


@dataclass
class Outcome:
    """How the worker ended: its exit code and, on a failure, the rank that failed first."""

    code: int
    failed: Rank | None


class Supervisor:
    """Starts a worker's ranks, relays signals, and decides the worker's exit code."""

    def __init__(
        self,
        ctx: WorkerContext,
        command: Sequence[str] = RANK_COMMAND,
        base_env: Mapping[str, str] | None = None,
        out: IO[str] | None = None,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.ctx = ctx
        self.command = list(command)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.out = out or sys.stdout
        self.grace_seconds = grace_seconds
        self.ranks: list[Rank] = []
        self._order: list[Rank] = []  # ranks in the order they exited
        self._stopping_since: float | None = None
        self._write_lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="carina-ranks-"))

    # ---------------------------------------------------------------- ranks

    def start(self) -> None:
        """Start every rank (local rank order)."""
        prefix = self.ctx.local_world_size > 1
        for local in range(self.ctx.local_world_size):
            term = self._scratch / f"rank-{local}.termination"
            rank_ctx = self.ctx.for_rank(local, termination_log=str(term))
            env = {"PYTHONUNBUFFERED": "1", **self.base_env, **rank_ctx.to_env()}
            proc = subprocess.Popen(
                self.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            rank = Rank(local, rank_ctx.rank, proc, term)
            rank.pump = threading.Thread(
                target=self._pump,
                args=(rank, f"[rank {rank.rank}] " if prefix else ""),
                daemon=True,
            )
            rank.pump.start()
            self.ranks.append(rank)

    def _pump(self, rank: Rank, prefix: str) -> None:
        """Copy a rank's output to ours, line by line, keeping its last lines."""
        assert rank.proc.stdout is not None
        for raw in iter(rank.proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            rank.tail.append(line.rstrip("\n"))
            with self._write_lock:
                self.out.write(prefix + line if prefix else line)
                self.out.flush()

    def signal_all(self, sig: signal.Signals) -> None:
        """Send `sig` to every rank still running."""
        for r in self.ranks:
            if r.code is None:
                with contextlib.suppress(ProcessLookupError):
                    r.proc.send_signal(sig)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: every rank saves and exits; no deadline of our own (the kubelet's)."""
        self.signal_all(signal.Signals(signum))

    # ---------------------------------------------------------------- waiting

    def wait(self, poll_seconds: float = 0.05) -> Outcome:
        """Wait for every rank; a failure stops the rest. Returns the worker's outcome."""
        failed: Rank | None = None
        while any(r.code is None for r in self.ranks):
            for r in self.ranks:
                if r.code is None and (rc := r.proc.poll()) is not None:
                    r.code = exit_code_of(rc)
                    self._order.append(r)
                    if r.code != 0 and failed is None:
                        failed = r
                        if r.code != ExitCode.PREEMPTED:
                            self._stop_rest()
            if self._stopping_since is not None and (
                time.monotonic() - self._stopping_since > self.grace_seconds
            ):
                self.signal_all(signal.SIGKILL)
            time.sleep(poll_seconds)
        for r in self.ranks:
            if r.pump is not None:
                r.pump.join(timeout=5)
        return Outcome(failed.code or 0 if failed else 0, failed)

    def _stop_rest(self) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            self.signal_all(signal.SIGTERM)

    # ---------------------------------------------------------------- the last word

    def termination_message(self, outcome: Outcome) -> TerminationMessage:
        """Rank 0's final word (progress, checkpoint) and, on a failure, who failed and how."""
        ack = None
        first = next((r for r in self.ranks if r.rank == 0), None)
        if first is not None:
            with contextlib.suppress(OSError):
                ack = TerminationMessage.parse(first.termination_file.read_text())
        failed = outcome.failed
        real_failure = failed is not None and failed.code != ExitCode.PREEMPTED
        return TerminationMessage(
            checkpoint_step=ack.checkpoint_step if ack else None,
            checkpoint_uri=ack.checkpoint_uri if ack else None,
            step=ack.step if ack else None,
            total_steps=ack.total_steps if ack else None,
            loss=ack.loss if ack else None,
            rank=failed.rank if failed is not None and real_failure else None,
            exit_code=outcome.code if real_failure else None,
            log_tail="\n".join(failed.tail) if failed is not None and real_failure else "",
        )

    def write_termination_message(self, outcome: Outcome, path: str) -> None:
        """Write the termination message, when there is anything to say."""
        message = self.termination_message(outcome)
        if message == TerminationMessage():
            return
        with contextlib.suppress(OSError):  # outside Kubernetes there may be no such file
            Path(path).write_text(message.to_text())

    def cleanup(self) -> None:
        for r in self.ranks:
            r.termination_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._scratch.rmdir()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the worker's ranks; return the worker's exit code.

    `argv`, when given, is the command of each rank (default `python -m carina.workloads`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    env = dict(os.environ if env is None else env)
    try:
        ctx = WorkerContext.from_env(env)
        grace = float(env.get("CARINA_SUPERVISOR_GRACE") or DEFAULT_GRACE_SECONDS)
    except (ContractError, ValueError) as e:
        print(f"carina supervisor: {e}", file=sys.stderr, flush=True)
        return int(ExitCode.BAD_CONFIG)
    # The ranks' contexts come from ours; stale per-rank names must not leak through.
    for name in ("RANK", "LOCAL_RANK"):
        env.pop(name, None)
    target = ctx.termination_log or env.get(CARINA_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG
    sup = Supervisor(ctx, command=argv or RANK_COMMAND, base_env=env, grace_seconds=grace)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, sup.on_signal)
    try:
        try:
            sup.start()
        except OSError as e:
            print(f"carina supervisor: cannot start ranks: {e}", file=sys.stderr, flush=True)
            sup.signal_all(signal.SIGKILL)
            return int(ExitCode.TRANSIENT)
        outcome = sup.wait()
        sup.write_termination_message(outcome, target)
        if outcome.failed is not None and outcome.code != ExitCode.PREEMPTED:
            print(
                f"carina supervisor: rank {outcome.failed.rank} (local {outcome.failed.local_rank})"
                f" exited first with code {outcome.code}",
                file=sys.stderr,
                flush=True,
            )
        return outcome.code
    finally:
        sup.cleanup()


if __name__ == "__main__":
    sys.exit(main())
