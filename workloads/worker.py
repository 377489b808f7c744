"""The worker contract (DESIGN.md): environment in, workload run, exit code out.

Environment (torchrun sets the first five; both substrates set the rest):

    RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
    CARINA_SPEC                path of {"kind": "pretrain", "config": {...camelCase...}}
    CARINA_JOB, CARINA_NAMESPACE   metric labels
    CARINA_CHECKPOINT_URI      where checkpoints go and resume comes from (unset = none)
    CARINA_CHECKPOINT_INTERVAL save every N steps (0 = only at the end and on SIGTERM)
    CARINA_CHECKPOINT_KEEP     keep the newest K complete checkpoints (0 = all; default 3)
    CARINA_RESTART             how many times this job has been restarted (informational)
    CARINA_METRICS_PORT        this process's Prometheus port (0 or unset = off; a port already
                               taken, as with several torchrun ranks per pod, only warns)
    CARINA_PROGRESS_FILE       rank 0 writes progress JSON here (embedded substrate)
    CARINA_TERMINATION_LOG     termination-message path (default /dev/termination-log)

Exit codes are `carina.workloads.config.ExitCode`: 0 done, 64/65/66 permanent (config, data,
missing input), 75 preempted after a checkpoint, 76 transient infrastructure error; any other
non-zero code is a crash, retried from the newest checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from carina.workloads.config import (
    WORKLOAD_KINDS,
    EvaluateConfig,
    ExitCode,
    FinetuneConfig,
    PretrainConfig,
    QuantizeConfig,
)
from carina.workloads.errors import WorkerError

# kind -> (config model, "module:function" of the runner). A runner takes (config, context)
# and returns an ExitCode. Kinds without a runner in this build exit BAD_CONFIG.
CONFIGS: dict[str, type[BaseModel]] = {
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "quantize": QuantizeConfig,
    "evaluate": EvaluateConfig,
}
RUNNERS: dict[str, str] = {
    "pretrain": "carina.workloads.train:run_pretrain",
    "finetune": "carina.workloads.finetune.run:run_finetune",
    "evaluate": "carina.workloads.evaluate.run:run_evaluate",
    "quantize": "carina.workloads.quantize.workload:run_quantize",
}

DEFAULT_CHECKPOINT_KEEP = 3


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise WorkerError(ExitCode.BAD_CONFIG, f"env {name}={raw!r} is not an integer") from e


@dataclass(frozen=True)
class WorkerContext:
    """Everything a workload learns from its environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    job: str = "local"
    namespace: str = "default"
    checkpoint_uri: str | None = None
    checkpoint_interval: int = 0
    checkpoint_keep: int = DEFAULT_CHECKPOINT_KEEP
    restart: int = 0
    metrics_port: int = 0
    progress_file: str | None = None
    termination_log: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerContext:
        """Read the contract's variables (see the module docstring)."""
        env = os.environ if env is None else env
        ctx = cls(
            rank=_int_env(env, "RANK", 0),
            world_size=_int_env(env, "WORLD_SIZE", 1),
            local_rank=_int_env(env, "LOCAL_RANK", 0),
            job=env.get("CARINA_JOB") or "local",
            namespace=env.get("CARINA_NAMESPACE") or "default",
            checkpoint_uri=env.get("CARINA_CHECKPOINT_URI") or None,
            checkpoint_interval=_int_env(env, "CARINA_CHECKPOINT_INTERVAL", 0),
            checkpoint_keep=_int_env(env, "CARINA_CHECKPOINT_KEEP", DEFAULT_CHECKPOINT_KEEP),
            restart=_int_env(env, "CARINA_RESTART", 0),
            metrics_port=_int_env(env, "CARINA_METRICS_PORT", 0),
            progress_file=env.get("CARINA_PROGRESS_FILE") or None,
            termination_log=env.get("CARINA_TERMINATION_LOG") or None,
        )
        if not 0 <= ctx.rank < ctx.world_size:
            raise WorkerError(ExitCode.BAD_CONFIG, f"RANK {ctx.rank} outside WORLD_SIZE")
        return ctx


def format_validation_error(err: ValidationError, prefix: str = "config") -> str:
    """`config.model.nHeads: Input should be ...; ...` (the field path a user can fix)."""
    parts = []
    for e in err.errors():
        path = ".".join([prefix, *(str(p) for p in e["loc"])])
        parts.append(f"{path}: {e['msg']}")
    return "; ".join(parts)


def load_spec(path: str | None) -> tuple[str, BaseModel]:
    """Read and validate the CARINA_SPEC file: (kind, typed config)."""
    if not path:
        raise WorkerError(ExitCode.BAD_CONFIG, "CARINA_SPEC is not set")
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError as e:
        raise WorkerError(ExitCode.NO_INPUT, f"CARINA_SPEC file {path} does not exist") from e
    except (OSError, json.JSONDecodeError) as e:
        raise WorkerError(ExitCode.BAD_CONFIG, f"CARINA_SPEC {path}: {e}") from e
    if not isinstance(doc, dict) or set(doc) - {"kind", "config"} or "kind" not in doc:
        raise WorkerError(
            ExitCode.BAD_CONFIG, 'spec must be {"kind": <workload kind>, "config": {...}}'
        )
    kind = doc["kind"]
    if kind not in WORKLOAD_KINDS:
        raise WorkerError(
            ExitCode.BAD_CONFIG, f"kind: {kind!r} is not one of {', '.join(WORKLOAD_KINDS)}"
        )
    try:
        config = CONFIGS[kind].model_validate(doc.get("config") or {})
    except ValidationError as e:
        raise WorkerError(ExitCode.BAD_CONFIG, format_validation_error(e)) from e
    return kind, config


def runner_for(kind: str) -> Callable[[Any, WorkerContext], int]:
    """The function that runs `kind`, imported on demand (so configs never pull torch)."""
    target = RUNNERS.get(kind)
    if target is None:
        raise WorkerError(ExitCode.BAD_CONFIG, f"kind {kind!r} is not implemented in this build")
    module, _, func = target.partition(":")
    fn: Callable[[Any, WorkerContext], int] = getattr(importlib.import_module(module), func)
    return fn


def _is_transient(exc: BaseException) -> bool:
    """Errors of the distributed backend or the network: a restart may well fix them."""
    import torch.distributed as dist

    transient: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    for name in ("DistBackendError", "DistNetworkError", "DistStoreError"):
        if hasattr(dist, name):
            transient += (getattr(dist, name),)
    return isinstance(exc, transient)


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the workload the environment names; return the contract's exit code."""
    env = os.environ if env is None else env
    try:
        ctx = WorkerContext.from_env(env)
        kind, config = load_spec(env.get("CARINA_SPEC"))
        return int(runner_for(kind)(config, ctx))
    except WorkerError as e:
        print(f"carina worker: {e}", file=sys.stderr, flush=True)
        return int(e.exit_code)
    except Exception as e:
        traceback.print_exc()
        if _is_transient(e):
            return int(ExitCode.TRANSIENT)
        return 1  # a crash: retryable from the newest checkpoint
