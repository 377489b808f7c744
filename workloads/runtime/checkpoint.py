"""Checkpoints: weights and optimizer state, JSON trainer state, per-rank RNG.

Layout under the checkpoint URI (file://, /abs, pvc:// or s3://):

    step-00000120/
        model.safetensors        full (unsharded) weights, tied tensors stored once
        optimizer.safetensors    AdamW moments and step counts, keyed by parameter name
        rng-rank-00000.safetensors  one per rank: torch CPU (and CUDA) generator state
        manifest.json            written LAST: step, trainer state (data position, tokens),
                                 layout, architecture, optimizer param groups, file list,
                                 and each file's sha256 and size (`checksums`)

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

A complete checkpoint can still be damaged (a disk that truncates, a byte that flips). Before
anything is loaded its files are checked against the manifest (`checksums.py`, the rule);
each file is hashed by one rank and the ranks agree on the verdict, so all of them load it or
none. A damaged one is `CorruptCheckpoint` (BAD_DATA). Resuming (`restore_latest`) and a
checkpoint root given as `init` or `base` fall back to the newest intact checkpoint, logging a
`checkpoint_skipped` event for each one passed over; when none is intact the run fails with
BAD_DATA naming each file. A `.../step-N` URI names one checkpoint: damaged, it fails at once.
Manifests from before format 2 carry no checksums: their files are only checked to exist.

Saving and loading are collective when torch.distributed is initialized.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import pickle
import re
import shutil
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.distributed as dist
from safetensors import SafetensorError
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

from carina.workloads.config import Architecture, ExitCode, VisionArchitecture
from carina.workloads.contract import step_dir as step_dir  # the contract names the layout
from carina.workloads.errors import WorkerError
from carina.workloads.runtime import checksums
from carina.workloads.runtime.checkpoint_refs import CheckpointRef, SkippedCheckpoint
from carina.workloads.runtime.storage import Store, open_store, scratch_dir
from carina.workloads.runtime.telemetry import log_event

if TYPE_CHECKING:
    from carina.workloads.models.transformer import Transformer

FORMAT_VERSION = 2  # 2: the manifest records each file's sha256 and size
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
LAYOUT_SAFETENSORS = "safetensors"  # full tensors written by rank 0
LAYOUT_DCP = "dcp"  # torch.distributed.checkpoint shards written by every rank
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_RNG_FILE = re.compile(r"^rng-rank-\d{5}\.safetensors$")


def rng_file(rank: int) -> str:
    return f"rng-rank-{rank:05d}.safetensors"


class CorruptCheckpoint(WorkerError):
    """A checkpoint whose manifest or files are damaged: BAD_DATA, the same bytes fail again."""

    def __init__(self, skipped: SkippedCheckpoint) -> None:
        super().__init__(
            ExitCode.BAD_DATA, f"{skipped.uri}/{skipped.file}: {skipped.reason} ({checksums.RULE})"
        )
        self.skipped = skipped


@dataclass(frozen=True)
class Restored:
    """What a resume loaded: the checkpoint, its manifest, and the newer ones it passed over."""

    ref: CheckpointRef
    manifest: dict[str, Any]
    skipped: tuple[SkippedCheckpoint, ...] = ()


SkipCallback = Callable[[SkippedCheckpoint], None]
T = TypeVar("T")


def ref_at(store: Store, step: int) -> CheckpointRef:
    """The checkpoint of `step` in `store` (whether or not it exists)."""
    return CheckpointRef(step, _join(store.uri, step_dir(step)))


def complete_steps(store: Store) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    steps = []
    for name in store.list_dirs():
        m = _STEP_DIR.match(name)
        if m and store.get_bytes(f"{name}/{MANIFEST}") is not None:
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest(store: Store) -> CheckpointRef | None:
    """The newest complete checkpoint, if any (intact or not: `restore_latest` checks)."""
    steps = complete_steps(store)
    return ref_at(store, steps[-1]) if steps else None


def read_manifest(store: Store, step: int) -> dict[str, Any]:
    """The manifest of a complete checkpoint; CorruptCheckpoint when it is not a valid one."""
    raw = store.get_bytes(f"{step_dir(step)}/{MANIFEST}")
    if raw is None:
        raise WorkerError(ExitCode.NO_INPUT, f"no complete checkpoint at step {step}")
    manifest, problem = checksums.parse_manifest(raw)
    if manifest is None:
        raise CorruptCheckpoint(
            SkippedCheckpoint(step, ref_at(store, step).uri, MANIFEST, str(problem))
        )
    return manifest


def _join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _is_dist():
        dist.barrier()


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if _is_dist() else (0, 1)


def _gather(mine: Any) -> list[Any]:
    """Every rank's `mine`, by rank (just `[mine]` without a process group)."""
    if not _is_dist():
        return [mine]
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every


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
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Rank 0 writes full weights and optimizer state; (checksums, aliases, optimizer meta).

    The checksums are of the files this rank wrote; the aliases and optimizer meta are rank
    0's (the manifest's). Other ranks write nothing here and get empty ones.
    """
    # Collective under FSDP; with a process group the full tensors land on rank 0 only.
    model_sd = get_model_state_dict(model, options=_full_state_options(cpu_offload=True))
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_full_state_options(True))
    if _is_dist() and dist.get_rank() != 0:
        return {}, {}, {}
    weights, aliases = _dedupe(cast(dict[str, torch.Tensor], model_sd))
    save_file(weights, str(staging / MODEL_FILE), metadata={"step": str(step)})
    opt_tensors, opt_meta = _split_optimizer(optim_sd)
    cpu = {k: t.detach().contiguous().cpu() for k, t in opt_tensors.items()}
    save_file(cpu, str(staging / OPTIMIZER_FILE))
    return _put_all(store, name, staging, [MODEL_FILE, OPTIMIZER_FILE]), aliases, opt_meta


def _save_sharded(
    store: Store, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, staging: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every rank writes its own shards with DCP and uploads them; (their checksums, meta)."""
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
    return _put_all(store, name, local, mine), opt_meta


def _put_all(store: Store, name: str, folder: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    """Store each of `files` from `folder` under the checkpoint `name`; their checksums."""
    sums = {}
    for f in files:
        sums[f] = checksums.digest(folder / f)
        store.put_file(folder / f, f"{name}/{f}")
    return sums


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


def _read_tensors(path: Path, bad: Callable[[str], CorruptCheckpoint]) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; one that does not parse is a corrupt checkpoint."""
    try:
        return load_file(str(path))
    except SafetensorError as e:  # unverified (format 1) files are only caught here
        raise bad(f"cannot be read ({e})") from None


def _load_full(
    local: dict[str, Path],
    manifest: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    bad: Callable[[str, str], CorruptCheckpoint],
) -> None:
    weights = _read_tensors(local[MODEL_FILE], lambda why: bad(MODEL_FILE, why))
    for alias, target in manifest.get("aliases", {}).items():
        weights[alias] = weights[target]
    set_model_state_dict(model, cast(Any, weights), options=_full_state_options(cpu_offload=False))
    if optimizer is not None:
        tensors = _read_tensors(local[OPTIMIZER_FILE], lambda why: bad(OPTIMIZER_FILE, why))
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

    def read_metadata(self, *_args: Any, **kwargs: Any) -> Metadata:
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
    folder: Path,
    manifest: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    bad: Callable[[str, str], CorruptCheckpoint],
) -> None:
    """DCP reads each rank's part of every tensor, resharding from the saving world size."""
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
            dcp.load(state, storage_reader=_Reader(folder), no_dist=not _is_dist())
    except CheckpointException as e:
        error = _dcp_error(e, "read it")
        if error.exit_code == ExitCode.TRANSIENT:
            raise error from None
        # DCP gathers every rank's failure, so every rank raises this and falls back alike.
        metadata = any(isinstance(x, pickle.UnpicklingError) for x, _ in e.failures.values())
        raise bad(".metadata" if metadata else "*.distcp", error.message) from None
    set_model_state_dict(model, model_sd)
    if optimizer is not None:
        osd = _join_optimizer(opt_tensors, manifest["optimizer"])
        set_optimizer_state_dict(model, optimizer, osd)


def _fetch_verified(
    store: Store,
    step: int,
    manifest: dict[str, Any],
    with_optimizer: bool,
    with_rng: bool,
    scratch: Path,
) -> dict[str, Path]:
    """Local paths of the files this rank reads, once every rank agrees they are intact.

    Files all ranks read are hashed by one rank each (round robin), its RNG file by each rank
    itself; the verdicts are gathered, so either every rank raises CorruptCheckpoint (naming
    the first bad file) or every rank goes on to load.
    """
    name = step_dir(step)
    rank, world = _rank_and_world()
    dcp_layout = manifest.get("layout") == LAYOUT_DCP
    if dcp_layout:
        shared = sorted(f for f in manifest["files"] if not _RNG_FILE.match(f))
    else:
        shared = [MODEL_FILE, *([OPTIMIZER_FILE] if with_optimizer else [])]
    own = [rng_file(rank)] if with_rng else []
    local: dict[str, Path] = {}
    problem: tuple[str, str] | None = None
    try:
        if dcp_layout:
            folder = store.get_dir(name, shared, scratch)
            local.update({f: folder / f for f in shared})
        else:
            local.update({f: store.get_file(f"{name}/{f}", scratch) for f in shared})
        local.update({f: store.get_file(f"{name}/{f}", scratch) for f in own})
    except FileNotFoundError as e:
        problem = (Path(str(e.filename or "?")).name, "missing (the manifest lists it)")
    sums: dict[str, Any] | None = manifest.get("checksums")
    for f in [f for i, f in enumerate(shared) if i % world == rank] + own:
        if problem is not None:
            break
        if f not in manifest["files"]:
            problem = (f, "not in the manifest's file list")
        else:
            reason = checksums.check_file(local[f], sums[f] if sums is not None else None)
            problem = (f, reason) if reason else None
    verdict = next((p for p in _gather(problem) if p is not None), None)
    if verdict is not None:
        raise CorruptCheckpoint(SkippedCheckpoint(step, ref_at(store, step).uri, *verdict))
    if sums is None and rank == 0:
        log_event(
            "checkpoint_unverified",
            step=step,
            uri=ref_at(store, step).uri,
            reason=f"format {manifest.get('format', 1)} manifest has no checksums: its files "
            "were only checked to exist",
        )
    return local


# ---------------------------------------------------------------- saving and loading


def save(
    store: Store,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    architecture: Architecture | VisionArchitecture,
    keep: int = 0,
    pinned: Collection[int] = (),
) -> CheckpointRef:
    """Save collectively; returns the checkpoint once its manifest is stored.

    Every rank must call this. A model sharded by FSDP is saved in the `dcp` layout, any other
    in the `safetensors` layout. A complete checkpoint already there for `step` (a damaged one
    a resume passed over) is removed first. `keep` > 0 prunes all but the
    newest `keep` complete ones up to this one, and those at `pinned` steps (a stage's end).
    """
    rank, world = _rank_and_world()
    name = step_dir(step)
    ref = ref_at(store, step)
    if rank == 0 and store.get_bytes(f"{name}/{MANIFEST}") is not None:
        store.delete_dir(name)  # its manifest must not vouch for the files stored below
    _barrier()  # no rank stores a file of the new checkpoint before the old one is gone
    staging = scratch_dir()
    try:
        aliases: dict[str, str] = {}
        if _is_dist() and _is_sharded(model):
            layout = LAYOUT_DCP
            mine, opt_meta = _save_sharded(store, name, model, optimizer, staging)
        else:
            layout = LAYOUT_SAFETENSORS
            mine, aliases, opt_meta = _save_full(store, name, step, model, optimizer, staging)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(staging / rng_file(rank)))
        mine.update(_put_all(store, name, staging, [rng_file(rank)]))
        # Gathering the checksums also orders every rank's stores before the manifest.
        sums = {f: d for every in _gather(mine) for f, d in every.items()}
        if rank == 0:
            manifest = {
                "format": FORMAT_VERSION,
                "layout": layout,
                "step": step,
                "worldSize": world,
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": sorted(sums),
                "checksums": {f: sums[f] for f in sorted(sums)},
                "aliases": aliases,
                "architecture": dataclasses.asdict(architecture),
                "optimizer": opt_meta,
                "trainer": trainer_state,
            }
            store.put_bytes(json.dumps(manifest, indent=1).encode(), f"{name}/{MANIFEST}")
            if keep > 0:
                prune(store, keep, upto=step, pinned=pinned)
        _barrier()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ref


def prune(store: Store, keep: int, upto: int | None = None, pinned: Collection[int] = ()) -> None:
    """Keep the newest `keep` complete checkpoints up to step `upto` (default: all of them).

    Older ones and abandoned partial saves below the newest kept one are deleted. Checkpoints
    above `upto` are left alone: after a resume fell back past damaged ones, those are newer
    than the step being saved, and counting them would delete the intact one just written
    (they are replaced when training reaches their step again).
    """
    steps = [s for s in complete_steps(store) if upto is None or s <= upto]
    if not steps:
        return
    kept = set(steps[-keep:]) | set(pinned)
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
    layout loads into a sharded or an unsharded model, whatever the saving world size. The
    files are verified first: a damaged checkpoint raises CorruptCheckpoint on every rank
    before anything is loaded.
    """
    manifest = read_manifest(store, step)
    uri = ref_at(store, step).uri

    def bad(file: str, reason: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(SkippedCheckpoint(step, uri, file, reason))

    layout = manifest.get("layout", LAYOUT_SAFETENSORS)
    if layout not in (LAYOUT_SAFETENSORS, LAYOUT_DCP):
        raise bad(MANIFEST, f"unknown layout {layout!r}")
    rank, world = _rank_and_world()
    with_rng = optimizer is not None and manifest.get("worldSize") == world  # 1:1 streams only
    scratch = scratch_dir()
    try:
        local = _fetch_verified(store, step, manifest, optimizer is not None, with_rng, scratch)
        if layout == LAYOUT_DCP:
            folder = next(p for f, p in local.items() if not _RNG_FILE.match(f)).parent
            _load_sharded(folder, manifest, model, optimizer, bad)
        else:
            _load_full(local, manifest, model, optimizer, bad)
        if with_rng:
            rng = _read_tensors(local[rng_file(rank)], lambda why: bad(rng_file(rank), why))
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def restore_latest(
    store: Store,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    on_skip: SkipCallback | None = None,
) -> Restored | None:
    """Load the newest intact checkpoint in `store`; None when there is no complete one.

    Newer ones that fail the integrity rule are passed over (each logged as a
    `checkpoint_skipped` event and given to `on_skip`); when none is intact, BAD_DATA.
    """
    steps = complete_steps(store)
    if not steps:
        return None
    step, manifest, skipped = _newest_intact(
        store, steps, lambda s: load(store, s, model, optimizer), on_skip
    )
    return Restored(ref_at(store, step), manifest, skipped)


def load_uri(
    uri: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    on_skip: SkipCallback | None = None,
) -> CheckpointRef:
    """Load the checkpoint `uri` names (a `.../step-N` directory, or a root's newest intact)."""
    ref, _ = _from_uri(uri, lambda store, step: load(store, step, model, optimizer), on_skip)
    return ref


def load_pretrained(
    uri: str, device: torch.device | str = "cpu", on_skip: SkipCallback | None = None
) -> Transformer:
    """A Transformer with the weights of the checkpoint at `uri` (for fine-tuning, eval)."""
    from carina.workloads.models.transformer import Transformer

    def build(store: Store, step: int) -> Transformer:
        model = Transformer(Architecture(**read_manifest(store, step)["architecture"]))
        load(store, step, model)
        return model

    _, model = _from_uri(uri, build, on_skip)
    return model.to(device)


def _from_uri(
    uri: str, attempt: Callable[[Store, int], T], on_skip: SkipCallback | None
) -> tuple[CheckpointRef, T]:
    """Run `attempt` (a load) on the checkpoint `uri` names.

    A `.../step-N` URI names exactly one checkpoint: damaged, it fails (BAD_DATA, naming the
    file). A root means its newest intact checkpoint, as a resume does.
    """
    base, _, last = uri.rstrip("/").rpartition("/")
    m = _STEP_DIR.match(last)
    if m:
        store = open_store(base)
        if store.get_bytes(f"{last}/{MANIFEST}") is None:
            raise WorkerError(ExitCode.NO_INPUT, f"{uri}: not a complete checkpoint")
        step = int(m.group(1))
        return ref_at(store, step), attempt(store, step)
    store = open_store(uri)
    steps = complete_steps(store)
    if not steps:
        raise WorkerError(ExitCode.NO_INPUT, f"{uri}: no complete checkpoint")
    step, value, _ = _newest_intact(store, steps, lambda s: attempt(store, s), on_skip)
    return ref_at(store, step), value


def _newest_intact(
    store: Store, steps: list[int], attempt: Callable[[int], T], on_skip: SkipCallback | None
) -> tuple[int, T, tuple[SkippedCheckpoint, ...]]:
    """`attempt` on each step, newest first, until one is intact; BAD_DATA when none is."""
    skipped: list[SkippedCheckpoint] = []
    for step in reversed(steps):
        try:
            value = attempt(step)
        except CorruptCheckpoint as e:
            skipped.append(e.skipped)
            if _rank_and_world()[0] == 0:
                log_event("checkpoint_skipped", **e.skipped.to_json())
            if on_skip is not None:
                on_skip(e.skipped)
            continue
        return step, value, tuple(skipped)
    damaged = "; ".join(f"{step_dir(s.step)}/{s.file}: {s.reason}" for s in skipped)
    raise WorkerError(
        ExitCode.BAD_DATA, f"{store.uri}: no intact checkpoint ({checksums.RULE}): {damaged}"
    )
