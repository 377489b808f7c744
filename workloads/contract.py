"""The worker contract: what a substrate gives a worker, and what a worker gives back.

One module, torch-free and stdlib-only, read by every side: the operator's renderer and the
embedded launcher build a worker's environment with `WorkerContext.pod_env`; the pod's entry
process (`carina.workloads.supervisor`) turns it into one environment per rank with
`WorkerContext.for_rank`; a rank reads it back with `WorkerContext.from_env`.

A worker (a pod, or one local process group) runs `local_world_size` ranks: one per GPU it
holds, or one (or an explicit count) on a CPU worker. Its environment names:

    GROUP_RANK                 the worker's index among the job's workers (torchrun's name)
    LOCAL_WORLD_SIZE           ranks in this worker
    WORLD_SIZE                 ranks in the job: replicas * LOCAL_WORLD_SIZE
    MASTER_ADDR, MASTER_PORT   rendezvous: worker 0's address and port
    CARINA_SPEC                path of the spec document {"kind": ..., "config": {...}}
    CARINA_JOB, CARINA_NAMESPACE   metric labels
    CARINA_CHECKPOINT_URI      where checkpoints go and resume comes from (unset = none)
    CARINA_CHECKPOINT_INTERVAL save every N steps (0 = only at the end and on SIGTERM)
    CARINA_CHECKPOINT_KEEP     keep the newest K complete checkpoints (0 = all)
    CARINA_RESTART             the gang's generation (how many times the job restarted)
    CARINA_METRICS_PORT        Prometheus port of local rank 0 (0 = off); the one channel of
                               live progress: both substrates scrape global rank 0's /metrics
    CARINA_TERMINATION_LOG     the worker's termination message (default /dev/termination-log)

and each rank's adds `RANK = GROUP_RANK * LOCAL_WORLD_SIZE + LOCAL_RANK` and `LOCAL_RANK`, the
names torchrun gives, so `torchrun -m carina.workloads` runs the same code.

Exit codes are `ExitCode`: 0 done, 64/65/66 permanent (config, data, missing input), 75
preempted after a checkpoint, 76 transient infrastructure error; any other non-zero code is a
crash, retried from the newest checkpoint. A rank killed by signal N counts as 128 + N.

The termination message (`TerminationMessage`, JSON, at most 4,096 bytes as Kubernetes keeps
it) is written by the worker's entry process when its ranks are done: global rank 0's final
word on a success or after SIGTERM (its last step, total steps and loss, and its newest
checkpoint: the metrics endpoint is gone once the worker exits), and on a failure which rank
failed first, its exit code and its last log lines. Where the entry process itself died, the
kubelet falls back to the container's log tail (`FallbackToLogsOnError`):
`TerminationMessage.parse` reads that text as the log tail.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlparse

__all__ = [
    "CONTRACT_ENV",
    "DEFAULT_CHECKPOINT_KEEP",
    "DEFAULT_TERMINATION_LOG",
    "PERMANENT_EXIT_CODES",
    "RANK_ENV",
    "SPEC_DIR",
    "SPEC_FILE",
    "TERMINATION_MESSAGE_LIMIT",
    "ExitCode",
    "TerminationMessage",
    "WorkerContext",
    "checkpoint_step_uri",
    "spec_document",
    "step_dir",
]


class ExitCode(IntEnum):
    """How a worker tells its substrate whether a retry can help.

    Codes 64-66 follow sysexits.h and are permanent: the same input fails the same way.
    Every other non-zero code (a crash, a signal, 75/76) is retryable from the newest
    checkpoint. `FailurePolicy.permanentExitCodes` defaults to the permanent ones below.
    """

    SUCCEEDED = 0
    BAD_CONFIG = 64  # the spec cannot run (EX_USAGE)
    BAD_DATA = 65  # the data cannot be read or tokenized (EX_DATAERR)
    NO_INPUT = 66  # a base checkpoint or input file does not exist (EX_NOINPUT)
    PREEMPTED = 75  # stopped on SIGTERM after saving a checkpoint (EX_TEMPFAIL)
    TRANSIENT = 76  # an infrastructure error a retry may fix (storage, rendezvous, NCCL)


PERMANENT_EXIT_CODES = (ExitCode.BAD_CONFIG, ExitCode.BAD_DATA, ExitCode.NO_INPUT)

# Environment names. The first group is torchrun's; the rest are Carina's.
RANK = "RANK"
LOCAL_RANK = "LOCAL_RANK"
GROUP_RANK = "GROUP_RANK"
WORLD_SIZE = "WORLD_SIZE"
LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
CARINA_JOB = "CARINA_JOB"
CARINA_NAMESPACE = "CARINA_NAMESPACE"
CARINA_SPEC = "CARINA_SPEC"
CARINA_CHECKPOINT_URI = "CARINA_CHECKPOINT_URI"
CARINA_CHECKPOINT_INTERVAL = "CARINA_CHECKPOINT_INTERVAL"
CARINA_CHECKPOINT_KEEP = "CARINA_CHECKPOINT_KEEP"
CARINA_RESTART = "CARINA_RESTART"
CARINA_METRICS_PORT = "CARINA_METRICS_PORT"
CARINA_TERMINATION_LOG = "CARINA_TERMINATION_LOG"

# Set per rank by the entry process, never by a substrate.
RANK_ENV = frozenset({RANK, LOCAL_RANK})
# Every name the contract owns: a user's pod template may set none of them.
CONTRACT_ENV = frozenset(
    {
        RANK,
        LOCAL_RANK,
        GROUP_RANK,
        WORLD_SIZE,
        LOCAL_WORLD_SIZE,
        MASTER_ADDR,
        MASTER_PORT,
        CARINA_JOB,
        CARINA_NAMESPACE,
        CARINA_SPEC,
        CARINA_CHECKPOINT_URI,
        CARINA_CHECKPOINT_INTERVAL,
        CARINA_CHECKPOINT_KEEP,
        CARINA_RESTART,
        CARINA_METRICS_PORT,
        CARINA_TERMINATION_LOG,
    }
)

SPEC_DIR = "/etc/carina"
SPEC_FILE = "spec.json"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_CHECKPOINT_KEEP = 3
# The kubelet keeps at most 4,096 bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096
# Where a pod mounts the claim of a `pvc://claim/path` URI (the operator mounts it there).
PVC_MOUNT_ROOT_ENV = "CARINA_PVC_MOUNT_ROOT"
DEFAULT_PVC_MOUNT_ROOT = "/mnt/pvc"


class ContractError(ValueError):
    """The environment breaks the contract (a worker exits BAD_CONFIG on it)."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ContractError(f"env {name}={raw!r} is not an integer") from e


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker, and each of its ranks, learns from its environment."""

    group_rank: int = 0
    local_world_size: int = 1
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    job: str = "local"
    namespace: str = "default"
    spec: str | None = None
    checkpoint_uri: str | None = None
    checkpoint_interval: int = 0
    checkpoint_keep: int = DEFAULT_CHECKPOINT_KEEP
    restart: int = 0
    metrics_port: int = 0
    termination_log: str | None = None

    @property
    def rank(self) -> int:
        """This rank's global rank."""
        return self.group_rank * self.local_world_size + self.local_rank

    @property
    def first_rank(self) -> int:
        """The global rank of this worker's local rank 0."""
        return self.group_rank * self.local_world_size

    @property
    def replicas(self) -> int:
        return self.world_size // self.local_world_size

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerContext:
        """Read the contract's variables; a rank set by torchrun (RANK) is honoured as is."""
        env = os.environ if env is None else env
        local_world = _int(env, LOCAL_WORLD_SIZE, 1)
        local_rank = _int(env, LOCAL_RANK, 0)
        world = _int(env, WORLD_SIZE, local_world)
        if local_world < 1 or world < 1:
            raise ContractError("LOCAL_WORLD_SIZE and WORLD_SIZE must be at least 1")
        if RANK in env and GROUP_RANK not in env:
            # torchrun (or any launcher) that names the global rank only.
            rank = _int(env, RANK, 0)
            group = rank // local_world
            local_rank = rank % local_world
        else:
            group = _int(env, GROUP_RANK, 0)
        ctx = cls(
            group_rank=group,
            local_world_size=local_world,
            world_size=world,
            local_rank=local_rank,
            master_addr=env.get(MASTER_ADDR) or "127.0.0.1",
            master_port=_int(env, MASTER_PORT, 29500),
            job=env.get(CARINA_JOB) or "local",
            namespace=env.get(CARINA_NAMESPACE) or "default",
            spec=env.get(CARINA_SPEC) or None,
            checkpoint_uri=env.get(CARINA_CHECKPOINT_URI) or None,
            checkpoint_interval=_int(env, CARINA_CHECKPOINT_INTERVAL, 0),
            checkpoint_keep=_int(env, CARINA_CHECKPOINT_KEEP, DEFAULT_CHECKPOINT_KEEP),
            restart=_int(env, CARINA_RESTART, 0),
            metrics_port=_int(env, CARINA_METRICS_PORT, 0),
            termination_log=env.get(CARINA_TERMINATION_LOG) or None,
        )
        if not 0 <= ctx.local_rank < ctx.local_world_size:
            raise ContractError(f"LOCAL_RANK {ctx.local_rank} outside LOCAL_WORLD_SIZE")
        if not 0 <= ctx.rank < ctx.world_size:
            raise ContractError(f"RANK {ctx.rank} outside WORLD_SIZE {ctx.world_size}")
        if RANK in env and _int(env, RANK, 0) != ctx.rank:
            raise ContractError(
                f"RANK {env[RANK]} disagrees with GROUP_RANK * LOCAL_WORLD_SIZE + LOCAL_RANK"
            )
        return ctx

    def pod_env(self) -> dict[str, str]:
        """The worker's environment, as a substrate sets it (no per-rank names)."""
        env = {
            GROUP_RANK: str(self.group_rank),
            LOCAL_WORLD_SIZE: str(self.local_world_size),
            WORLD_SIZE: str(self.world_size),
            MASTER_ADDR: self.master_addr,
            MASTER_PORT: str(self.master_port),
            CARINA_JOB: self.job,
            CARINA_NAMESPACE: self.namespace,
            CARINA_CHECKPOINT_INTERVAL: str(self.checkpoint_interval),
            CARINA_CHECKPOINT_KEEP: str(self.checkpoint_keep),
            CARINA_RESTART: str(self.restart),
            CARINA_METRICS_PORT: str(self.metrics_port),
        }
        optional = {
            CARINA_SPEC: self.spec,
            CARINA_CHECKPOINT_URI: self.checkpoint_uri,
            CARINA_TERMINATION_LOG: self.termination_log,
        }
        env.update({k: v for k, v in optional.items() if v})
        return env

    def to_env(self) -> dict[str, str]:
        """One rank's whole environment (the worker's plus RANK and LOCAL_RANK)."""
        return {**self.pod_env(), RANK: str(self.rank), LOCAL_RANK: str(self.local_rank)}

    def for_rank(self, local_rank: int, termination_log: str | None = None) -> WorkerContext:
        """The context of local rank `local_rank` of this worker.

        Only local rank 0 serves metrics (the pod declares one metrics port); each rank gets
        its own termination-message file, which the entry process reads when it exits.
        """
        if not 0 <= local_rank < self.local_world_size:
            raise ContractError(f"local rank {local_rank} outside {self.local_world_size}")
        return dataclasses.replace(
            self,
            local_rank=local_rank,
            metrics_port=self.metrics_port if local_rank == 0 else 0,
            termination_log=termination_log,
        )


def spec_document(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """What CARINA_SPEC holds: {"kind": ..., "config": {...camelCase...}}."""
    return {"kind": kind, "config": dict(config)}


def step_dir(step: int) -> str:
    """Directory name of the checkpoint of `step` (zero-padded so names sort by step)."""
    return f"step-{step:08d}"


def local_path(uri: str, pvc_mount_root: str | None = None) -> Path | None:
    """The folder on this machine a checkpoint URI names; None for s3://.

    file:///p and /p are p; pvc://claim/p is <mount root>/claim/p, the mount root being
    `pvc_mount_root`, else CARINA_PVC_MOUNT_ROOT, else /mnt/pvc. The worker's storage and the
    embedded platform's check of local paths both read URIs with this function, so both see
    the same folder. `ContractError` for any other scheme.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return None
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "pvc":
        root = pvc_mount_root or os.environ.get(PVC_MOUNT_ROOT_ENV, DEFAULT_PVC_MOUNT_ROOT)
        return Path(root) / parsed.netloc / parsed.path.lstrip("/")
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    if parsed.scheme == "job":
        raise ContractError(
            f"checkpoint URI {uri!r} names a TrainingJob: the platform resolves job:// references"
            " before a worker starts"
        )
    raise ContractError(f"checkpoint URI {uri!r}: unsupported scheme")


def checkpoint_step_uri(root: str, step: int) -> str:
    """The URI of the checkpoint of `step` under the checkpoint root `root`."""
    return f"{root.rstrip('/')}/{step_dir(step)}"


@dataclass(frozen=True)
class TerminationMessage:
    """A worker's last word: where rank 0 got to, the checkpoint it saved, and who failed how.

    `step`, `total_steps` and `loss` are global rank 0's final progress (on a success or after
    SIGTERM); the platform puts them into status.progress, since the metrics endpoint that
    reported progress while the worker ran is gone once it exits.
    """

    checkpoint_step: int | None = None
    checkpoint_uri: str | None = None
    step: int | None = None  # optimizer steps completed
    total_steps: int | None = None
    loss: float | None = None  # of the last logged step
    rank: int | None = None  # global rank of the first rank that failed
    exit_code: int | None = None
    log_tail: str = ""

    def to_text(self) -> str:
        """JSON within TERMINATION_MESSAGE_LIMIT bytes (the log tail is cut from the front)."""
        doc: dict[str, Any] = {}
        if self.step is not None:
            progress: dict[str, Any] = {"step": self.step}
            if self.total_steps is not None:
                progress["totalSteps"] = self.total_steps
            if self.loss is not None and math.isfinite(self.loss):
                progress["loss"] = self.loss
            doc["progress"] = progress
        if self.checkpoint_step is not None and self.checkpoint_uri:
            doc["checkpoint"] = {"step": self.checkpoint_step, "uri": self.checkpoint_uri}
        if self.rank is not None:
            doc["rank"] = self.rank
        if self.exit_code is not None:
            doc["exitCode"] = self.exit_code
        tail = self.log_tail
        while True:
            text = json.dumps({**doc, "log": tail} if tail else doc)
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT or not tail:
                return text
            over = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
            tail = tail[max(over, len(tail) // 8) :]

    @classmethod
    def parse(cls, text: str | None) -> TerminationMessage | None:
        """Read a termination message; text that is not ours is a log tail (the fallback)."""
        if not text or not text.strip():
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return cls(log_tail=text)
        ckpt = doc.get("checkpoint")
        step = uri = None
        if isinstance(ckpt, dict):
            try:
                step, uri = int(ckpt["step"]), str(ckpt["uri"])
            except (KeyError, TypeError, ValueError):
                step = uri = None
        said = doc.get("progress")
        said = said if isinstance(said, dict) else {}
        loss = said.get("loss")
        rank = doc.get("rank")
        code = doc.get("exitCode")
        log = doc.get("log")
        return cls(
            checkpoint_step=step,
            checkpoint_uri=uri,
            step=_whole(said.get("step")),
            total_steps=_whole(said.get("totalSteps")),
            loss=float(loss) if _number(loss) and math.isfinite(loss) else None,
            rank=rank if isinstance(rank, int) else None,
            exit_code=code if isinstance(code, int) else None,
            log_tail=log if isinstance(log, str) else "",
        )

    def last_lines(self, count: int = 5, width: int = 600) -> str:
        """The last `count` non-empty lines of the log tail, at most `width` characters."""
        lines = [ln.rstrip() for ln in self.log_tail.splitlines() if ln.strip()]
        text = " | ".join(lines[-count:])
        return text if len(text) <= width else "..." + text[-(width - 3) :]


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def exit_code_of(returncode: int) -> int:
    """A process's exit status as a shell reports it (128 + N when killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode
