"""Process groups, model wrapping (DDP or FSDP2) and the SIGTERM agreement between ranks."""

from __future__ import annotations

import contextlib
import datetime
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from carina.workloads.config import ExitCode, Parallelism
from carina.workloads.errors import WorkerError

# Long enough for rank 0 to read a large corpus or checkpoint while the others wait.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(rank: int, world_size: int, local_rank: int) -> Dist:
    """Pick the device and join the process group (NCCL on GPUs, gloo on CPUs)."""
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            # NCCL puts each rank on a GPU of its own: two ranks cannot share one.
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but this worker sees "
                f"{torch.cuda.device_count()}: run one rank per GPU",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(
                backend,
                timeout=PROCESS_GROUP_TIMEOUT,
                device_id=device if device.type == "cuda" else None,
            )
        except (RuntimeError, ValueError, TimeoutError) as e:
            raise WorkerError(ExitCode.TRANSIENT, f"rendezvous failed: {e}") from e
    return Dist(rank, world_size, local_rank, device)


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, parallelism: Parallelism, d: Dist) -> nn.Module:
    """DDP (replicated weights) or FSDP2 (`fully_shard` per block, then the root).

    Single-process runs return the model unchanged. FSDP2 shards in place, so `model` itself
    becomes the sharded module; DDP returns a wrapper around it.
    """
    if not d.distributed:
        return model
    if Parallelism(parallelism) == Parallelism.FSDP:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(d.device.type, (d.world_size,))
        for block in model.blocks:  # type: ignore[union-attr]
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


@contextlib.contextmanager
def grad_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps (all but the last)."""
    no_sync = getattr(model, "no_sync", None)  # DDP
    set_sync = getattr(model, "set_requires_gradient_sync", None)  # FSDP2
    if sync:
        yield
    elif no_sync is not None:
        with no_sync():
            yield
    elif set_sync is not None:
        set_sync(False)
        try:
            yield
        finally:
            set_sync(True)
    else:
        yield


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when it is true on any rank (an all-reduce MAX of the flag)."""
    if not d.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of `values` across ranks."""
    if d.distributed:
        values = values.detach().clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= d.world_size
    return values


def gather_floats(value: float, d: Dist) -> list[float]:
    """Every rank's `value`, by rank, on every rank (one small all-gather)."""
    if not d.distributed:
        return [value]
    mine = torch.tensor([value], dtype=torch.float64, device=d.device)
    every = torch.empty(d.world_size, dtype=torch.float64, device=d.device)
    dist.all_gather_into_tensor(every, mine)
    return [float(v) for v in every.tolist()]


class PreemptionFlag:
    """Set by SIGTERM (or by `request()`); read by the training loop at step boundaries.

    The handler only sets a flag: saving inside a signal handler could interrupt a
    collective halfway and deadlock the other ranks.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True

    def request(self) -> None:
        """Ask for a checkpoint-and-exit at the next step boundary."""
        self.requested = True

    def install(self) -> PreemptionFlag:
        """Handle SIGTERM from now on (main thread only; elsewhere only `request` works)."""
        with contextlib.suppress(ValueError):  # not the main thread
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def uninstall(self) -> None:
        """Restore the previous SIGTERM handler."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
