"""A worker's entry process: one rank each, SIGTERM to all, the first failing rank's exit code.

The ranks here are tiny Python scripts that obey the contract's environment, so the tests see
exactly what the supervisor gives each rank and what it makes of how they end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carina.workloads.contract import TerminationMessage, WorkerContext

# A rank that records its environment, then behaves as RANK_BEHAVIOUR_<rank> says:
# "ok", "exit:<code>", "sleep" (until SIGTERM: acknowledges a checkpoint on rank 0, exits 75),
# "hang" (ignores SIGTERM).
RANK = r"""
import json, os, signal, sys, time
from pathlib import Path
rank = int(os.environ["RANK"])
out = Path(os.environ["TEST_OUT"])
(out / f"env-{rank}.json").write_text(json.dumps(dict(os.environ)))
what = os.environ.get(f"RANK_BEHAVIOUR_{rank}", "ok")
def term(*_):
    (out / f"term-{rank}").write_text("1")
    if rank == 0:
        Path(os.environ["CARINA_TERMINATION_LOG"]).write_text(
            json.dumps({
                "progress": {"step": 7, "totalSteps": 100, "loss": 1.5},
                "checkpoint": {"step": 7, "uri": "file:///ckpt/step-00000007"},
            })
        )
    sys.exit(75)
signal.signal(signal.SIGTERM, signal.SIG_IGN if what == "hang" else term)
print(f"rank {rank} started", flush=True)
if what.startswith("exit:"):
    time.sleep(0.3)
    print(f"rank {rank}: the data file is corrupt", flush=True)
    sys.exit(int(what.split(":")[1]))
if what in ("sleep", "hang"):
    time.sleep(60)
"""


def start(
    tmp_path: Path, group_rank: int, local: int, replicas: int, **behaviour: str
) -> tuple[subprocess.Popen[str], Path]:
    ctx = WorkerContext(
        group_rank=group_rank,
        local_world_size=local,
        world_size=replicas * local,
        job="demo",
        metrics_port=9400,
        termination_log=str(tmp_path / "termination-log"),
    )
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")},
        **ctx.pod_env(),
        "TEST_OUT": str(tmp_path),
        "CARINA_SUPERVISOR_GRACE": "2",
        **{f"RANK_BEHAVIOUR_{k.removeprefix('r')}": v for k, v in behaviour.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "carina.workloads.supervisor", sys.executable, "-c", RANK],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, tmp_path


def rank_env(out: Path, rank: int) -> dict[str, str]:
    return json.loads((out / f"env-{rank}.json").read_text())


def wait_started(out: Path, ranks: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not all((out / f"env-{r}.json").exists() for r in ranks):
        assert time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.05)
    time.sleep(0.2)  # their SIGTERM handlers are installed right after


def termination(out: Path) -> TerminationMessage | None:
    path = out / "termination-log"
    return TerminationMessage.parse(path.read_text()) if path.exists() else None


def test_worker_one_of_two_with_four_gpus_runs_ranks_four_to_seven(tmp_path: Path) -> None:
    proc, out = start(tmp_path, group_rank=1, local=4, replicas=2)
    assert proc.wait(timeout=30) == 0, proc.stdout.read() if proc.stdout else ""
    envs = [rank_env(out, r) for r in range(4, 8)]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert {e["WORLD_SIZE"] for e in envs} == {"8"}
    assert {e["LOCAL_WORLD_SIZE"] for e in envs} == {"4"}
    # One metrics port per pod: local rank 0 serves it; each rank its own termination file.
    assert [e["CARINA_METRICS_PORT"] for e in envs] == ["9400", "0", "0", "0"]
    assert len({e["CARINA_TERMINATION_LOG"] for e in envs}) == 4
    assert termination(out) is None  # a clean finish has nothing to say
    output = proc.stdout.read() if proc.stdout else ""
    assert "[rank 5] rank 5 started" in output


def test_a_permanent_exit_of_one_rank_is_the_workers_exit_and_names_the_rank(
    tmp_path: Path,
) -> None:
    proc, out = start(tmp_path, group_rank=0, local=2, replicas=1, r0="sleep", r1="exit:65")
    assert proc.wait(timeout=30) == 65
    # The other rank was stopped, not left to hang in a collective.
    assert (out / "term-0").exists()
    message = termination(out)
    assert message is not None
    assert (message.rank, message.exit_code) == (1, 65)
    assert "the data file is corrupt" in message.last_lines()


def test_a_rank_killed_by_a_signal_exits_as_a_shell_reports_it(tmp_path: Path) -> None:
    proc, out = start(tmp_path, group_rank=0, local=2, replicas=1, r0="sleep", r1="sleep")
    wait_started(out, [0, 1])
    os.kill(_pid_of_rank(proc.pid, 1), signal.SIGKILL)
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    message = termination(out)
    assert message is not None
    assert message.rank == 1
    assert message.exit_code == 137


def test_sigterm_reaches_every_rank_and_rank_0_acknowledges_the_checkpoint(
    tmp_path: Path,
) -> None:
    proc, out = start(
        tmp_path, group_rank=0, local=3, replicas=1, r0="sleep", r1="sleep", r2="sleep"
    )
    wait_started(out, [0, 1, 2])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 75
    assert all((out / f"term-{r}").exists() for r in range(3))
    message = termination(out)
    assert message is not None
    assert (message.checkpoint_step, message.checkpoint_uri) == (7, "file:///ckpt/step-00000007")
    assert (message.step, message.total_steps, message.loss) == (7, 100, 1.5)  # its final word
    assert message.rank is None
    assert message.exit_code is None


def test_a_rank_that_ignores_the_stop_is_killed_after_the_grace(tmp_path: Path) -> None:
    proc, _ = start(tmp_path, group_rank=0, local=2, replicas=1, r0="hang", r1="exit:1")
    started = time.monotonic()
    assert proc.wait(timeout=30) == 1
    assert time.monotonic() - started < 15


def _pid_of_rank(supervisor: int, rank: int) -> int:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for pid in children:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    pytest.fail(f"no rank {rank} under {supervisor}")
