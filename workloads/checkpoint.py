"""Checkpoints: weights and optimizer state, JSON trainer state, per-rank RNG.

Layout under the checkpoint URI (file://, /abs, pvc:// or s3://):

    step-00000120/
        model.safetensors        full (unsharded) weights, tied tensors stored once
        optimizer.safetensors    AdamW moments and step counts, keyed by parameter name
        rng-rank-00000.safetensors  one per rank: torch CPU (and CUDA) generator state
        manifest.json            written LAST: step, trainer state (data position, tokens),
                                 layout, architecture, optimizer param groups, file list

That is the `safetensors` layout (single process and DDP: rank 0 writes the full tensors).
A run sharded with FSDP on more than one rank uses the `dcp` layout instead: weights and
optimizer moments go through torch.distributed.checkpoint, each rank writing only its own
shards (`__<rank>_0.distcp`, and `.metadata` from rank 0) with no gather anywhere, and loading
reshards them onto any number of ranks, or onto one unsharded model. DCP writes to a local
directory, so each rank stages its files and uploads them through the store (S3 as well); a
load reads them in place from a local store and downloads them from any other. The manifest's
`layout` says which one a checkpoint uses.

A checkpoint is complete, and visible to `latest`, only once its manifest exists, and the
manifest is written after every rank's files are stored (a barrier in between). Loading runs
no code from the checkpoint: tensors are read by safetensors or by torch's weights-only
unpickler, and DCP's pickled `.metadata` by an unpickler that builds only DCP's own types.

Saving and loading are collective when torch.distributed is initialized.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import pickle
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed import checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from carina.workloads.config import Architecture, ExitCode
from carina.workloads.contract import step_dir as step_dir  # the contract names the layout
from carina.workloads.errors import WorkerError
from carina.workloads.storage import Store, open_store, scratch_dir

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
LAYOUT_SAFETENSORS = "safetensors"  # full tensors written by rank 0
LAYOUT_DCP = "dcp"  # torch.distributed.checkpoint shards written by every rank
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_RNG_FILE = re.compile(r"^rng-rank-\d{5}\.safetensors$")


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


def _is_sharded(model: nn.Module) -> bool:
    """True for a model whose parameters FSDP2 has sharded across ranks."""
    return any(isinstance(p, DTensor) for p in model.parameters())


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


def _split_optimizer(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as {"state/<param>/<name>": tensor} plus JSON-able leftovers."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for fqn, state in osd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{fqn}/{name}"] = value
            else:
                scalars.setdefault(fqn, {})[name] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, rest = key.split("/", 1)
        fqn, name = rest.rsplit("/", 1)
        state.setdefault(fqn, {})[name] = value
    for fqn, values in meta.get("scalars", {}).items():
        state.setdefault(fqn, {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- the two layouts


def _save_full(
    store: Store,
    name: str,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    staging: Path,
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """Rank 0 writes full weights and optimizer state; (files, aliases, optimizer meta).

    The aliases and optimizer meta are rank 0's (the manifest's); other ranks get empty ones.
    """
    # Collective under FSDP; with a process group the full tensors land on rank 0 only.
    model_sd = get_model_state_dict(model, options=_full_state_options(cpu_offload=True))
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_full_state_options(True))
    files = [MODEL_FILE, OPTIMIZER_FILE]
    if _is_dist() and dist.get_rank() != 0:
        return files, {}, {}
    weights, aliases = _dedupe(cast(dict[str, torch.Tensor], model_sd))
    save_file(weights, str(staging / MODEL_FILE), metadata={"step": str(step)})
    store.put_file(staging / MODEL_FILE, f"{name}/{MODEL_FILE}")
    opt_tensors, opt_meta = _split_optimizer(optim_sd)
    cpu = {k: t.detach().contiguous().cpu() for k, t in opt_tensors.items()}
    save_file(cpu, str(staging / OPTIMIZER_FILE))
    store.put_file(staging / OPTIMIZER_FILE, f"{name}/{OPTIMIZER_FILE}")
    return files, aliases, opt_meta


def _save_sharded(
    store: Store, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, staging: Path
) -> tuple[list[str], dict[str, Any]]:
    """Every rank writes its own shards with DCP and uploads them; (all files, optimizer meta)."""
    opt_tensors, opt_meta = _split_optimizer(get_optimizer_state_dict(model, optimizer))
    local = staging / "dcp"
    try:
        dcp.save(
            {"model": get_model_state_dict(model), "optimizer": opt_tensors},
            storage_writer=dcp.FileSystemWriter(local),
        )
    except CheckpointException as e:
        raise _dcp_error(e, f"write {_join(store.uri, name)}") from None
    mine = sorted(p.name for p in local.iterdir())  # rank 0's include `.metadata`
    for f in mine:
        store.put_file(local / f, f"{name}/{f}")
    every: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return sorted(set(itertools.chain.from_iterable(f or [] for f in every))), opt_meta


def _dcp_error(e: CheckpointException, action: str) -> WorkerError:
    """DCP's error (a BaseException gathering every rank's) as one a worker exits on.

    I/O errors may pass on a retry; anything else (a shard that does not fit, metadata that
    names code) is in the checkpoint itself.
    """
    errors = [exc for exc, _ in e.failures.values()]
    transient = any(isinstance(x, OSError) for x in errors)
    first = str(errors[0]).splitlines()[0] if errors else str(e)
    return WorkerError(
        ExitCode.TRANSIENT if transient else ExitCode.BAD_DATA, f"cannot {action}: {first}"
    )


def _load_full(
    store: Store,
    name: str,
    manifest: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scratch: Path,
) -> None:
    weights = load_file(str(store.get_file(f"{name}/{MODEL_FILE}", scratch)))
    for alias, target in manifest.get("aliases", {}).items():
        weights[alias] = weights[target]
    set_model_state_dict(model, cast(Any, weights), options=_full_state_options(cpu_offload=False))
    if optimizer is not None:
        tensors = load_file(str(store.get_file(f"{name}/{OPTIMIZER_FILE}", scratch)))
        osd = _join_optimizer(tensors, manifest["optimizer"])
        set_optimizer_state_dict(
            model, optimizer, osd, options=_full_state_options(cpu_offload=False)
        )


# What DCP's `.metadata` pickle may name besides DCP's own dataclasses and torch's dtypes.
_METADATA_GLOBALS = frozenset(
    {
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),  # a lookup of torch.strided and its kin
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),  # the checkpoint id the writer was given
    }
)


class _DCPMetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata dataclasses and torch's dtype-like constants, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_GLOBALS:
            return super().find_class(module, name)
        # Only these modules are looked into at all: naming any other imports nothing.
        if module == "torch" or module.startswith("torch.distributed.checkpoint."):
            obj = super().find_class(module, name)
            if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)):
                return obj
            dcp_type = isinstance(obj, type) and (
                dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)
            )
            if module != "torch" and dcp_type:
                return obj
        raise pickle.UnpicklingError(f"checkpoint metadata may not contain {module}.{name}")


class _Reader(dcp.FileSystemReader):
    """DCP's file-system reader, with `.metadata` read by `_DCPMetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")  # DCP's fallback to per-rank metadata, which we never write
        name = ".metadata" if rank is None else f"__{rank}.metadata"
        with open(Path(self.path) / name, "rb") as f:
            metadata = _DCPMetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError("checkpoint metadata is not DCP metadata")
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _load_sharded(
    store: Store,
    name: str,
    manifest: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scratch: Path,
) -> None:
    """DCP reads each rank's part of every tensor, resharding from the saving world size."""
    files = [f for f in manifest["files"] if not _RNG_FILE.match(f)]
    local = store.get_dir(name, files, scratch)
    model_sd = get_model_state_dict(model)  # this rank's shards (or full tensors) to fill
    state: dict[str, Any] = {"model": model_sd}
    opt_tensors: dict[str, torch.Tensor] = {}
    if optimizer is not None:
        # The optimizer's state is created (zeros) first so DCP has tensors to load into.
        opt_tensors, _ = _split_optimizer(get_optimizer_state_dict(model, optimizer))
        state["optimizer"] = opt_tensors
    try:
        with warnings.catch_warnings():
            # Loading in one process without a group is intended here (evaluation, quantize).
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(state, storage_reader=_Reader(local), no_dist=not _is_dist())
    except CheckpointException as e:
        raise _dcp_error(e, f"read {_join(store.uri, name)}") from None
    set_model_state_dict(model, model_sd)
    if optimizer is not None:
        osd = _join_optimizer(opt_tensors, manifest["optimizer"])
        set_optimizer_state_dict(model, optimizer, osd)


# ---------------------------------------------------------------- saving and loading


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

    Every rank must call this. A model sharded by FSDP is saved in the `dcp` layout, any other
    in the `safetensors` layout. `keep` > 0 prunes all but the newest `keep` complete ones.
    """
    rank = dist.get_rank() if _is_dist() else 0
    world = dist.get_world_size() if _is_dist() else 1
    name = step_dir(step)
    ref = CheckpointRef(step, _join(store.uri, name))
    staging = scratch_dir()
    try:
        aliases: dict[str, str] = {}
        if _is_dist() and _is_sharded(model):
            layout = LAYOUT_DCP
            files, opt_meta = _save_sharded(store, name, model, optimizer, staging)
        else:
            layout = LAYOUT_SAFETENSORS
            files, aliases, opt_meta = _save_full(store, name, step, model, optimizer, staging)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(staging / rng_file(rank)))
        store.put_file(staging / rng_file(rank), f"{name}/{rng_file(rank)}")
        _barrier()  # every rank's files are stored before the manifest makes them visible
        if rank == 0:
            manifest = {
                "format": FORMAT_VERSION,
                "layout": layout,
                "step": step,
                "worldSize": world,
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files + [rng_file(r) for r in range(world)],
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


def load(
    store: Store,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore weights (and optimizer, RNG) of a complete checkpoint; returns its manifest.

    Collective when distributed: every rank reads what it needs and takes its shard. Either
    layout loads into a sharded or an unsharded model, whatever the saving world size.
    """
    manifest = read_manifest(store, step)
    name = step_dir(step)
    layout = manifest.get("layout", LAYOUT_SAFETENSORS)
    scratch = scratch_dir()
    try:
        if layout == LAYOUT_DCP:
            _load_sharded(store, name, manifest, model, optimizer, scratch)
        elif layout == LAYOUT_SAFETENSORS:
            _load_full(store, name, manifest, model, optimizer, scratch)
        else:
            raise WorkerError(
                ExitCode.BAD_DATA, f"{_join(store.uri, name)}: unknown layout {layout!r}"
            )
        if optimizer is not None:
            rank = dist.get_rank() if _is_dist() else 0
            world = dist.get_world_size() if _is_dist() else 1
            if manifest.get("worldSize") == world:  # RNG streams only map 1:1 at equal size
                rng = load_file(str(store.get_file(f"{name}/{rng_file(rank)}", scratch)))
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
