"""Checkpoints: safetensors weights and optimizer state, JSON trainer state, per-rank RNG.

Layout under the checkpoint URI (file://, /abs, pvc:// or s3://):

    step-00000120/
        model.safetensors        full (unsharded) weights, tied tensors stored once
        optimizer.safetensors    AdamW moments and step counts, keyed by parameter name
        rng-rank-00000.safetensors  one per rank: torch CPU (and CUDA) generator state
        manifest.json            written LAST: step, trainer state (data position, tokens),
                                 architecture, optimizer param groups, file list

A checkpoint is complete, and visible to `latest_step`, only once its manifest exists, and the
manifest is written after every rank's files are stored (a barrier in between). No pickle is
involved, so loading a checkpoint cannot run code.

Saving and loading are collective when torch.distributed is initialized (FSDP gathers full
tensors on rank 0; only rank 0 writes the shared files).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from carina.workloads.config import Architecture, ExitCode
from carina.workloads.errors import WorkerError
from carina.workloads.storage import Store, open_store, scratch_dir

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


def step_dir(step: int) -> str:
    """Directory name of the checkpoint of `step` (zero-padded so names sort by step)."""
    return f"step-{step:08d}"


def rng_file(rank: int) -> str:
    return f"rng-rank-{rank:05d}.safetensors"


@dataclass(frozen=True)
class CheckpointRef:
    """A complete checkpoint: its step and the URI of its directory."""

    step: int
    uri: str


def complete_steps(store: Store) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    steps = []
    for name in store.list_dirs():
        m = _STEP_DIR.match(name)
        if m and store.get_bytes(f"{name}/{MANIFEST}") is not None:
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest(store: Store) -> CheckpointRef | None:
    """The newest complete checkpoint, if any."""
    steps = complete_steps(store)
    return CheckpointRef(steps[-1], _join(store.uri, step_dir(steps[-1]))) if steps else None


def read_manifest(store: Store, step: int) -> dict[str, Any]:
    """The manifest of a complete checkpoint."""
    raw = store.get_bytes(f"{step_dir(step)}/{MANIFEST}")
    if raw is None:
        raise WorkerError(ExitCode.NO_INPUT, f"no complete checkpoint at step {step}")
    return dict(json.loads(raw))


def _join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _is_dist():
        dist.barrier()


def _full_state_options(cpu_offload: bool) -> StateDictOptions:
    # Full (unsharded) tensors; offloaded to CPU on rank 0 only when a group exists.
    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload and _is_dist())


def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier key (tied weights); return aliases."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int], str] = {}
    for key, t in tensors.items():
        ident = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if ident in seen and t.numel() > 0:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        out[key] = t.detach().contiguous().cpu()
    return out, aliases


def _flatten_optimizer(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as {"state/<param>/<name>": tensor} plus JSON-able leftovers."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for fqn, state in osd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{fqn}/{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(fqn, {})[name] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, rest = key.split("/", 1)
        fqn, name = rest.rsplit("/", 1)
        state.setdefault(fqn, {})[name] = value
    for fqn, values in meta.get("scalars", {}).items():
        state.setdefault(fqn, {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    store: Store,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    architecture: Architecture,
    keep: int = 0,
) -> CheckpointRef:
    """Save collectively; returns the checkpoint once its manifest is stored.

    Every rank must call this. `keep` > 0 prunes all but the newest `keep` complete ones.
    """
    rank = dist.get_rank() if _is_dist() else 0
    world = dist.get_world_size() if _is_dist() else 1
    name = step_dir(step)
    ref = CheckpointRef(step, _join(store.uri, name))
    model_sd = get_model_state_dict(model, options=_full_state_options(cpu_offload=True))
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_full_state_options(True))
    staging = scratch_dir()
    try:
        if rank == 0:
            weights, aliases = _dedupe(cast(dict[str, torch.Tensor], model_sd))
            save_file(weights, str(staging / MODEL_FILE), metadata={"step": str(step)})
            store.put_file(staging / MODEL_FILE, f"{name}/{MODEL_FILE}")
            opt_tensors, opt_meta = _flatten_optimizer(optim_sd)
            save_file(opt_tensors, str(staging / OPTIMIZER_FILE))
            store.put_file(staging / OPTIMIZER_FILE, f"{name}/{OPTIMIZER_FILE}")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(staging / rng_file(rank)))
        store.put_file(staging / rng_file(rank), f"{name}/{rng_file(rank)}")
        _barrier()  # every rank's files are stored before the manifest makes them visible
        if rank == 0:
            manifest = {
                "format": FORMAT_VERSION,
                "step": step,
                "worldSize": world,
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": [MODEL_FILE, OPTIMIZER_FILE] + [rng_file(r) for r in range(world)],
                "aliases": aliases,
                "architecture": dataclasses.asdict(architecture),
                "optimizer": opt_meta,
                "trainer": trainer_state,
            }
            store.put_bytes(json.dumps(manifest, indent=1).encode(), f"{name}/{MANIFEST}")
            if keep > 0:
                prune(store, keep)
        _barrier()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ref


def prune(store: Store, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older and abandoned partial ones."""
    steps = complete_steps(store)
    if not steps:
        return
    kept = set(steps[-keep:])
    newest = steps[-1]
    for name in store.list_dirs():
        m = _STEP_DIR.match(name)
        if m and int(m.group(1)) not in kept and int(m.group(1)) < newest:
            store.delete_dir(name)


def _read_tensors(store: Store, key: str, scratch: Path) -> dict[str, torch.Tensor]:
    return load_file(str(store.get_file(key, scratch)))


def load(
    store: Store,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore weights (and optimizer, RNG) of a complete checkpoint; returns its manifest.

    Collective when distributed: every rank reads the files and takes its shard.
    """
    manifest = read_manifest(store, step)
    name = step_dir(step)
    scratch = scratch_dir()
    try:
        weights = _read_tensors(store, f"{name}/{MODEL_FILE}", scratch)
        for alias, target in manifest.get("aliases", {}).items():
            weights[alias] = weights[target]
        set_model_state_dict(
            model, cast(Any, weights), options=_full_state_options(cpu_offload=False)
        )
        if optimizer is not None:
            tensors = _read_tensors(store, f"{name}/{OPTIMIZER_FILE}", scratch)
            osd = _unflatten_optimizer(tensors, manifest["optimizer"])
            set_optimizer_state_dict(
                model, optimizer, osd, options=_full_state_options(cpu_offload=False)
            )
            rank = dist.get_rank() if _is_dist() else 0
            world = dist.get_world_size() if _is_dist() else 1
            if manifest.get("worldSize") == world:  # RNG streams only map 1:1 at equal size
                rng = _read_tensors(store, f"{name}/{rng_file(rank)}", scratch)
                torch.set_rng_state(rng["cpu"])
                if "cuda" in rng and torch.cuda.is_available():
                    torch.cuda.set_rng_state(rng["cuda"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def resolve(uri: str) -> tuple[Store, int]:
    """A store and step from a checkpoint root (newest complete) or a `.../step-N` URI."""
    base, _, last = uri.rstrip("/").rpartition("/")
    m = _STEP_DIR.match(last)
    if m:
        store = open_store(base)
        if store.get_bytes(f"{last}/{MANIFEST}") is None:
            raise WorkerError(ExitCode.NO_INPUT, f"{uri}: not a complete checkpoint")
        return store, int(m.group(1))
    store = open_store(uri)
    ref = latest(store)
    if ref is None:
        raise WorkerError(ExitCode.NO_INPUT, f"{uri}: no complete checkpoint")
    return store, ref.step


def load_pretrained(uri: str, device: torch.device | str = "cpu") -> nn.Module:
    """A Transformer with the weights of the checkpoint at `uri` (for fine-tuning, eval)."""
    from carina.workloads.model import Transformer

    store, step = resolve(uri)
    arch = Architecture(**read_manifest(store, step)["architecture"])
    model = Transformer(arch)
    load(store, step, model)
    return model.to(device)
