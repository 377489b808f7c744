"""Checkpoints through a real S3 server (MinIO): round trip, atomic visibility, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from carina.workloads.config import ExitCode, ModelSpec, PretrainConfig
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.pretrain.run import StepRecord, run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import WorkerContext

pytestmark = pytest.mark.s3
torch.set_num_threads(1)


@pytest.fixture
def s3_env(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The bucket, with the AWS variables a worker would get set in this process."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CARINA_S3_ENDPOINT", raising=False)
    return s3


def trained() -> tuple[Transformer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Transformer(ModelSpec(preset="tiny", cla_sharing=2, n_kv_heads=1).resolve())
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    x = torch.randint(0, 256, (2, 16))
    model(x, x)[1].backward()  # type: ignore[union-attr]
    opt.step()
    return model, opt


def test_checkpoint_round_trips_through_s3(s3_env: Any) -> None:
    store = open_store(f"s3://{s3_env.bucket}/jobs/a")
    model, opt = trained()
    ref = checkpoint.save(store, 7, model, opt, {"step": 7, "data": {"consumed": 56}}, model.arch)
    assert ref.uri == f"s3://{s3_env.bucket}/jobs/a/step-00000007"
    # A save that died before its manifest stays invisible.
    s3_env.client().put_object(
        Bucket=s3_env.bucket, Key="jobs/a/step-00000009/model.safetensors", Body=b"partial"
    )
    latest = checkpoint.latest(store)
    assert latest == ref

    fresh = Transformer(model.arch)
    fresh_opt = torch.optim.AdamW(param_groups(fresh, 0.1), lr=1e-3)
    manifest = checkpoint.load(store, 7, fresh, fresh_opt)
    assert manifest["trainer"]["data"] == {"consumed": 56}
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    assert str(opt.state_dict()["state"]) == str(fresh_opt.state_dict()["state"])


def test_keep_prunes_old_checkpoints_in_the_bucket(s3_env: Any) -> None:
    store = open_store(f"s3://{s3_env.bucket}/jobs/b")
    model, opt = trained()
    for step in (1, 2, 3):
        checkpoint.save(store, step, model, opt, {"step": step}, model.arch, keep=2)
    assert checkpoint.complete_steps(store) == [2, 3]
    assert store.list_dirs() == ["step-00000002", "step-00000003"]


def test_preempted_run_resumes_from_s3_loss_for_loss(s3_env: Any, tmp_path: Path) -> None:
    cfg = PretrainConfig.model_validate(
        {
            "model": {"preset": "tiny"},
            "data": {"source": "synthetic"},
            "steps": 8,
            "batchSize": 4,
            "microBatchSize": 4,
            "seqLen": 32,
            "evalEvery": 0,
            "schedule": {"kind": "constant", "warmupSteps": 1},
        }
    )

    def run(uri: str | None, stop_at: int | None) -> tuple[ExitCode, list[float]]:
        losses: list[float] = []

        def on_step(rec: StepRecord, preempt: PreemptionFlag) -> None:
            losses.append(rec.loss)
            if rec.step == stop_at:
                preempt.request()

        ctx = WorkerContext(checkpoint_uri=uri, termination_log=str(tmp_path / "term"))
        return run_pretrain(cfg, ctx, on_step), losses

    _, straight = run(None, None)
    uri = f"s3://{s3_env.bucket}/jobs/c"
    code, first = run(uri, stop_at=4)
    assert code == ExitCode.PREEMPTED
    code, second = run(uri, None)
    assert code == ExitCode.SUCCEEDED
    assert first + second == straight
    assert checkpoint.complete_steps(open_store(uri)) == [4, 8]
