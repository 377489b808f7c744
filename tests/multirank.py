"""Run a function on N ranks of a real process group (gloo on CPUs, NCCL on GPUs).

Ranks are spawned processes; each gets the torchrun environment (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, ...) and its return value comes back to the caller by a file, so a
test can compare what every rank saw with a single-process run in the test itself. On the
`cpu` device the ranks see no GPU even on a GPU machine, so the workloads pick gloo and the CPU.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(
    local_rank: int,
    fn: Callable[..., Any],
    world_size: int,
    env: dict[str, str],
    out: str,
    args: tuple[Any, ...],
) -> None:
    os.environ.update(env, RANK=str(local_rank), LOCAL_RANK=str(local_rank))
    torch.set_num_threads(1)  # N ranks share the test machine's cores
    result = fn(local_rank, world_size, *args)
    Path(out, f"rank-{local_rank}.pkl").write_bytes(pickle.dumps(result))
    # What a test checks is the result above. A spawned gloo rank has once aborted in its
    # interpreter's teardown after a finished run ("terminate called without an active
    # exception"); the worker's own exit path is tested end to end elsewhere, so the rank ends
    # here, its result safely written.
    os._exit(0)


def run_ranks(
    fn: Callable[..., Any], world_size: int, device: torch.device, *args: Any
) -> list[Any]:
    """`fn(rank, world_size, *args)` on `world_size` ranks; their return values, by rank.

    `fn` must be a module-level function and joins the process group itself (the workloads
    do, through `distributed.setup`). CUDA runs need a GPU per rank and are skipped without.
    """
    if device.type == "cuda" and torch.cuda.device_count() < world_size:
        pytest.skip(
            f"cuda: {world_size} NCCL ranks need {world_size} GPUs, "
            f"this machine has {torch.cuda.device_count()}"
        )
    env = {
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }
    if device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory(prefix="carina-ranks-") as out:
        mp.start_processes(
            _rank_main,
            args=(fn, world_size, env, out, args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [pickle.loads(Path(out, f"rank-{r}.pkl").read_bytes()) for r in range(world_size)]
