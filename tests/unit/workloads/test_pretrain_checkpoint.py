"""Checkpoints: complete-or-invisible, round trip, pruning, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from workload_builders import tiny_config

from carina.workloads.config import ExitCode, ModelSpec
from carina.workloads.errors import WorkerError
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.pretrain.run import StepRecord, run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import WorkerContext

torch.set_num_threads(1)


def trained_model(tie: bool = False) -> tuple[Transformer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Transformer(ModelSpec(preset="tiny", tie_embeddings=tie).resolve())
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    x = torch.randint(0, 256, (2, 16))
    _, loss = model(x, x)
    assert loss is not None
    loss.backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("tie", [False, True])
def test_checkpoint_round_trips_weights_optimizer_and_trainer_state(
    tmp_path: Path, tie: bool
) -> None:
    store = open_store(f"file://{tmp_path}")
    model, opt = trained_model(tie)
    ref = checkpoint.save(store, 5, model, opt, {"step": 5, "data": {"consumed": 40}}, model.arch)
    assert ref.uri == f"file://{tmp_path}/step-00000005"
    fresh, fresh_opt = Transformer(model.arch), None
    fresh_opt = torch.optim.AdamW(param_groups(fresh, 0.1), lr=1e-3)
    manifest = checkpoint.load(store, 5, fresh, fresh_opt)
    assert manifest["trainer"] == {"step": 5, "data": {"consumed": 40}}
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    if tie:
        assert fresh.lm_head.weight is fresh.tok_emb.weight
    sa, sb = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[i][name], sb[i][name])


def test_a_checkpoint_without_its_manifest_is_invisible(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    model, opt = trained_model()
    checkpoint.save(store, 3, model, opt, {"step": 3}, model.arch)
    # A save that died before its manifest: data files but no manifest.
    (tmp_path / "step-00000009").mkdir()
    (tmp_path / "step-00000009" / "model.safetensors").write_bytes(b"partial")
    assert checkpoint.complete_steps(store) == [3]
    latest = checkpoint.latest(store)
    assert latest is not None
    assert latest.step == 3


def test_keep_prunes_all_but_the_newest_complete_checkpoints(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    model, opt = trained_model()
    (tmp_path / "step-00000002").mkdir(parents=True)  # abandoned partial save
    for step in (1, 3, 5, 7):
        checkpoint.save(store, step, model, opt, {"step": step}, model.arch, keep=2)
    assert checkpoint.complete_steps(store) == [5, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000005", "step-00000007"]


def test_load_pretrained_rebuilds_the_architecture_from_the_manifest(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    model, opt = trained_model()
    checkpoint.save(store, 4, model, opt, {"step": 4}, model.arch)
    loaded = checkpoint.load_pretrained(f"file://{tmp_path}")
    assert loaded.arch == model.arch
    x = torch.randint(0, 256, (1, 8))
    assert torch.equal(loaded(x)[0], model(x)[0])
    with pytest.raises(WorkerError) as e:
        checkpoint.load_pretrained(f"file://{tmp_path}/step-00000099")
    assert e.value.exit_code == ExitCode.NO_INPUT


def test_resume_is_exact_20_steps_equal_10_then_preempt_then_10(tmp_path: Path) -> None:
    cfg = tiny_config(steps=20, evalEvery=5)

    def run(uri: str, stop_at: int | None) -> tuple[ExitCode, list[float]]:
        losses: list[float] = []

        def on_step(rec: StepRecord, preempt: PreemptionFlag) -> None:
            losses.append(rec.loss)
            if rec.step == stop_at:
                preempt.request()  # what SIGTERM's handler does

        ctx = WorkerContext(checkpoint_uri=uri, termination_log=str(tmp_path / "term"))
        return run_pretrain(cfg, ctx, on_step), losses

    code, straight = run(f"file://{tmp_path}/a", None)
    assert code == ExitCode.SUCCEEDED
    assert len(straight) == 20
    code, first = run(f"file://{tmp_path}/b", stop_at=10)
    assert code == ExitCode.PREEMPTED
    assert len(first) == 10
    ack = json.loads((tmp_path / "term").read_text())
    assert ack["checkpoint"] == {"step": 10, "uri": f"file://{tmp_path}/b/step-00000010"}
    assert (ack["progress"]["step"], ack["progress"]["totalSteps"]) == (10, 20)
    manifest = json.loads((tmp_path / "b/step-00000010/manifest.json").read_text())
    assert manifest["trainer"]["data"] == {"consumed": 10 * cfg.batch_size}
    code, second = run(f"file://{tmp_path}/b", None)
    assert code == ExitCode.SUCCEEDED
    assert first + second == straight  # loss for loss, bit for bit
