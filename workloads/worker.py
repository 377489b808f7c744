"""One rank of a worker: environment in, workload run, exit code out.

`python -m carina.workloads` runs one rank. The pod's entry process
(`carina.workloads.supervisor`) starts one per GPU; torchrun can start them as well. Every
variable, the exit codes and the documents a rank reads and writes are the worker contract,
`carina.workloads.contract`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from carina.workloads.config import (
    WORKLOAD_KINDS,
    EvaluateConfig,
    ExitCode,
    FinetuneConfig,
    PretrainConfig,
    QuantizeConfig,
    SweepConfig,
    VisionConfig,
    describe_errors,
)
from carina.workloads.contract import ContractError, WorkerContext
from carina.workloads.errors import WorkerError

__all__ = ["CONFIGS", "RUNNERS", "WorkerContext", "load_spec", "main", "runner_for"]

# kind -> (config model, "module:function" of the runner). A runner takes (config, context)
# and returns an ExitCode. Kinds without a runner in this build exit BAD_CONFIG.
CONFIGS: dict[str, type[BaseModel]] = {
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "quantize": QuantizeConfig,
    "evaluate": EvaluateConfig,
    "vision": VisionConfig,
    "sweep": SweepConfig,
}
RUNNERS: dict[str, str] = {
    "pretrain": "carina.workloads.pretrain.run:run_pretrain",
    "finetune": "carina.workloads.finetune.run:run_finetune",
    "evaluate": "carina.workloads.evaluate.run:run_evaluate",
    "quantize": "carina.workloads.quantize.workload:run_quantize",
    "vision": "carina.workloads.vision.run:run_vision",
    "sweep": "carina.workloads.sweep.run:run_sweep",
}


def format_validation_error(err: ValidationError, prefix: str = "config") -> str:
    """`config.model.nHeads: Input should be ...; ...` (the field path a user can fix)."""
    return "; ".join(f"{p}: {r}" for p, r in describe_errors(err.errors(), (prefix,)))


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
        try:
            ctx = WorkerContext.from_env(env)
        except ContractError as e:
            raise WorkerError(ExitCode.BAD_CONFIG, str(e)) from e
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
