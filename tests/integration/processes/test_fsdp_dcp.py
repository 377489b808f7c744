"""FSDP checkpoints are sharded with torch.distributed.checkpoint and reshard on resume.

Four ranks train a few steps and save (each rank its own shards, the manifest last); two
ranks resume from that checkpoint and must start from exactly the state the four had, then
take the same steps the four-rank run took.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from botocore.exceptions import ClientError
from multirank import run_ranks
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from workload_builders import tiny_config

from carina.workloads.config import Architecture, ExitCode, PretrainConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.errors import WorkerError
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.pretrain.run import StepRecord, Trainer
from carina.workloads.runtime import checkpoint, checksums, distributed
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.storage import S3Store, open_store

SAVED_AT = 3
STEPS = 6


def fsdp_config() -> PretrainConfig:
    return tiny_config(
        steps=STEPS,
        batchSize=8,
        microBatchSize=4,  # divides evenly on 4 and on 2 ranks
        logEvery=1,
        parallelism="fsdp",
        precision="fp32",
        schedule={"kind": "constant", "warmupSteps": 2},
    )


State = dict[str, dict[str, torch.Tensor]]


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> State:
    """Unsharded weights and optimizer moments (collective; the values land on rank 0)."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=torch.distributed.is_initialized())
    weights = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts)
    moments = {
        f"{fqn}/{name}": value.detach().cpu().clone()
        for fqn, values in osd.get("state", {}).items()
        for name, value in values.items()
    }
    return {"model": {k: v.detach().cpu().clone() for k, v in weights.items()}, "optim": moments}


def train_fsdp(rank: int, world: int, uri: str, interval: int) -> tuple[dict[int, float], State]:
    """One rank of a pretraining run: its losses by step, and (rank 0) the state at SAVED_AT."""
    ctx = WorkerContext(
        local_world_size=world,
        world_size=world,
        local_rank=rank,
        checkpoint_uri=uri,
        checkpoint_interval=interval,
        checkpoint_keep=0,
    )
    d = distributed.setup(rank, world, rank)
    try:
        trainer = Trainer(fsdp_config(), ctx, d, PreemptionFlag())
        # A resumed run's state right after loading (reading a fresh optimizer's would step it).
        states = {trainer.step: full_state(trainer.raw, trainer.optimizer)} if trainer.step else {}
        losses: dict[int, float] = {}

        def on_step(rec: StepRecord, _preempt: PreemptionFlag) -> None:
            losses[rec.step] = rec.loss
            if rec.step == SAVED_AT:
                states[rec.step] = full_state(trainer.raw, trainer.optimizer)

        trainer.run(on_step)
        trainer.close()
        return losses, states[SAVED_AT] if rank == 0 else {}
    finally:
        distributed.teardown()


def assert_same_state(a: State, b: State) -> None:
    for part in ("model", "optim"):
        assert a[part].keys() == b[part].keys(), part
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part} {key}"


@pytest.mark.slow  # six spawned ranks: about a minute on two busy cores
def test_fsdp_saves_shards_per_rank_and_resumes_on_two_ranks_or_one(
    tmp_path: Path, device: torch.device
) -> None:
    four, two = tmp_path / "four", tmp_path / "two"
    ranks = run_ranks(train_fsdp, 4, device, f"file://{four}", SAVED_AT)
    straight, saved = ranks[0][0], ranks[0][1]
    assert list(straight) == list(range(1, STEPS + 1))

    name = checkpoint.step_dir(SAVED_AT)
    store = open_store(str(four))
    manifest = checkpoint.read_manifest(store, SAVED_AT)
    assert manifest["layout"] == checkpoint.LAYOUT_DCP
    assert manifest["worldSize"] == 4
    on_disk = {p.name for p in (four / name).iterdir()}
    shards = {f"__{r}_0.distcp" for r in range(4)}
    assert shards | {".metadata", "manifest.json"} <= on_disk
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    assert checkpoint.MODEL_FILE not in on_disk  # nothing was gathered onto one rank

    # Two ranks: DCP reshards; the run continues where the four-rank run went on from.
    shutil.copytree(four / name, two / name)  # resume from SAVED_AT, not from the last save
    ranks = run_ranks(train_fsdp, 2, device, f"file://{two}", 0)
    resumed, restored = ranks[0][0], ranks[0][1]
    assert_same_state(restored, saved)
    assert list(resumed) == list(range(SAVED_AT + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(straight[step], rel=1e-4), step
    assert checkpoint.read_manifest(open_store(str(two)), STEPS)["worldSize"] == 2

    # One process, no process group: the full tensors of an unsharded model.
    model = Transformer(Architecture(**manifest["architecture"]))
    optimizer = torch.optim.AdamW(param_groups(model, 0.1))
    checkpoint.load(store, SAVED_AT, model, optimizer)
    assert_same_state(full_state(model, optimizer), saved)


def test_single_process_checkpoints_keep_the_safetensors_layout(tmp_path: Path) -> None:
    model = Transformer(fsdp_config().model.resolve())
    optimizer = torch.optim.AdamW(param_groups(model, 0.1))
    store = open_store(str(tmp_path))
    checkpoint.save(store, 1, model, optimizer, {"step": 1}, model.arch)
    manifest: dict[str, Any] = checkpoint.read_manifest(store, 1)
    assert manifest["layout"] == checkpoint.LAYOUT_SAFETENSORS
    assert manifest["files"] == [
        checkpoint.MODEL_FILE,
        checkpoint.OPTIMIZER_FILE,
        checkpoint.rng_file(0),
    ]


class FolderS3:
    """The few S3 client calls `S3Store` makes, kept in a local folder (bucket/key paths)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / bucket / key

    def upload_file(self, local: str, bucket: str, key: str) -> None:
        self._path(bucket, key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, self._path(bucket, key))

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self._path(Bucket, Key).parent.mkdir(parents=True, exist_ok=True)
        self._path(Bucket, Key).write_bytes(Body)

    def download_file(self, bucket: str, key: str, dest: str) -> None:
        shutil.copyfile(self._path(bucket, key), dest)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        path = self._path(Bucket, Key)
        if not path.exists():
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(path.read_bytes())}


@contextlib.contextmanager
def one_rank_group() -> Iterator[None]:
    """A gloo process group of this process alone (no port: an in-memory store)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def sharded_model(seed: int) -> tuple[Transformer, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Transformer(fsdp_config().model.resolve())
    mesh = init_device_mesh("cpu", (1,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1))
    x = torch.randint(0, 256, (2, 16))
    model(x, x)[1].backward()  # type: ignore[union-attr]
    optimizer.step()
    return model, optimizer


def test_sharded_checkpoints_go_through_an_object_store(tmp_path: Path) -> None:
    store = S3Store("bucket", "runs/a", "s3://bucket/runs/a", client=FolderS3(tmp_path / "s3"))
    with one_rank_group():
        model, optimizer = sharded_model(seed=0)
        checkpoint.save(store, 2, model, optimizer, {"step": 2}, model.arch)
        saved = full_state(model, optimizer)
        fresh, fresh_optimizer = sharded_model(seed=1)
        manifest = checkpoint.load(store, 2, fresh, fresh_optimizer)
        assert manifest["layout"] == checkpoint.LAYOUT_DCP
        assert_same_state(full_state(fresh, fresh_optimizer), saved)
    objects = {p.name for p in (tmp_path / "s3/bucket/runs/a/step-00000002").iterdir()}
    assert objects == {*manifest["files"], "manifest.json"}


def test_dcp_metadata_that_names_other_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (tmp_path / "ran",))

    with one_rank_group():
        model, optimizer = sharded_model(seed=0)
        store = open_store(str(tmp_path))
        checkpoint.save(store, 1, model, optimizer, {"step": 1}, model.arch)
        metadata = tmp_path / "step-00000001/.metadata"
        metadata.write_bytes(pickle.dumps(Payload()))
        # Whoever can write the metadata can write the manifest's checksum of it too.
        manifest_path = tmp_path / "step-00000001/manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["checksums"][".metadata"] = checksums.digest(metadata)
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(WorkerError, match=r"may not contain pathlib\.Path\.touch") as e:
            checkpoint.load(store, 1, model, optimizer)
    assert e.value.exit_code == ExitCode.BAD_DATA
    assert not (tmp_path / "ran").exists()


def test_the_manifest_has_a_checksum_of_every_shard_and_a_damaged_one_is_caught(
    tmp_path: Path,
) -> None:
    store = open_store(str(tmp_path))
    with one_rank_group():
        model, optimizer = sharded_model(seed=0)
        checkpoint.save(store, 1, model, optimizer, {"step": 1}, model.arch)
        checkpoint.save(store, 2, model, optimizer, {"step": 2}, model.arch)
        manifest = checkpoint.read_manifest(store, 2)
        assert set(manifest["checksums"]) == set(manifest["files"])
        assert {".metadata", "__0_0.distcp"} <= set(manifest["checksums"])
        shard = tmp_path / "step-00000002/__0_0.distcp"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
        with pytest.raises(checkpoint.CorruptCheckpoint, match=r"__0_0\.distcp: sha256"):
            checkpoint.load(store, 2, model, optimizer)
        restored = checkpoint.restore_latest(store, model, optimizer)
    assert restored is not None
    assert restored.ref.step == 1
    assert [(s.step, s.file) for s in restored.skipped] == [(2, "__0_0.distcp")]


def test_an_object_missing_from_s3_is_a_damaged_checkpoint_not_a_storage_error(
    tmp_path: Path,
) -> None:
    store = S3Store("bucket", "runs/b", "s3://bucket/runs/b", client=FolderS3(tmp_path / "s3"))
    model = Transformer(fsdp_config().model.resolve())
    optimizer = torch.optim.AdamW(param_groups(model, 0.1))
    checkpoint.save(store, 1, model, optimizer, {"step": 1}, model.arch)
    (tmp_path / "s3/bucket/runs/b/step-00000001" / checkpoint.MODEL_FILE).unlink()
    with pytest.raises(checkpoint.CorruptCheckpoint) as e:
        checkpoint.load(store, 1, model, optimizer)
    assert e.value.exit_code == ExitCode.BAD_DATA
    assert e.value.skipped.file == checkpoint.MODEL_FILE
    assert "missing" in e.value.skipped.reason
