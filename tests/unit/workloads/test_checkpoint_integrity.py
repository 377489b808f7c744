"""Damaged checkpoints: caught by their checksums, passed over for the newest intact one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import generate_latest
from workload_builders import tiny_config

from carina.platform.api.types import DamagedCheckpoint
from carina.platform.planning.progress import parse_damaged, read_scrape
from carina.workloads import metric_names as names
from carina.workloads.config import ExitCode, ModelSpec
from carina.workloads.errors import WorkerError
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint, checksums
from carina.workloads.runtime import loop as loop_module
from carina.workloads.runtime.checkpoint_refs import CheckpointRef, SkippedCheckpoint
from carina.workloads.runtime.storage import open_store
from carina.workloads.runtime.telemetry import Telemetry
from carina.workloads.worker import WorkerContext

torch.set_num_threads(1)


def model_and_optimizer(seed: int = 0) -> tuple[Transformer, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Transformer(ModelSpec(preset="tiny").resolve())
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    x = torch.randint(0, 256, (2, 16))
    model(x, x)[1].backward()  # type: ignore[union-attr]
    optimizer.step()
    return model, optimizer


def saved(root: Path, *steps: int) -> dict[int, dict[str, torch.Tensor]]:
    """Checkpoints of different weights at `steps` under `root`; each one's weights."""
    store = open_store(f"file://{root}")
    weights = {}
    for step in steps:
        model, optimizer = model_and_optimizer(seed=step)
        checkpoint.save(store, step, model, optimizer, {"step": step}, model.arch)
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return weights


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x01  # deep in the tensor data: the header still parses
    path.write_bytes(bytes(data))


def break_json(path: Path) -> None:
    path.write_text(path.read_text()[:-40])


# (what is done to the newest checkpoint, the file blamed, words of the reason)
DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "truncated weights": (
        lambda d: truncate(d / checkpoint.MODEL_FILE),
        checkpoint.MODEL_FILE,
        "the manifest records",
    ),
    "broken manifest JSON": (
        lambda d: break_json(d / checkpoint.MANIFEST),
        checkpoint.MANIFEST,
        "not valid JSON",
    ),
    "a missing file": (
        lambda d: (d / checkpoint.MODEL_FILE).unlink(),
        checkpoint.MODEL_FILE,
        "missing",
    ),
    "a flipped byte of the same size": (
        lambda d: flip_a_byte(d / checkpoint.MODEL_FILE),
        checkpoint.MODEL_FILE,
        "same size, changed bytes",
    ),
}


def test_the_manifest_records_the_sha256_and_size_of_every_file(tmp_path: Path) -> None:
    saved(tmp_path, 4)
    manifest = checkpoint.read_manifest(open_store(str(tmp_path)), 4)
    assert manifest["format"] == 2
    assert sorted(manifest["checksums"]) == manifest["files"]
    for name, entry in manifest["checksums"].items():
        assert entry == checksums.digest(tmp_path / "step-00000004" / name)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_resume_passes_over_a_damaged_newest_checkpoint_for_the_older_intact_one(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = saved(tmp_path, 10, 20)
    harm, blamed, words = DAMAGE[damage]
    harm(tmp_path / "step-00000020")
    store = open_store(f"file://{tmp_path}")
    model, optimizer = model_and_optimizer(seed=99)
    seen: list[SkippedCheckpoint] = []

    restored = checkpoint.restore_latest(store, model, optimizer, on_skip=seen.append)

    assert restored is not None
    assert restored.ref.step == 10
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[10][key]), key
    assert [(s.step, s.file) for s in restored.skipped] == [(20, blamed)]
    assert words in restored.skipped[0].reason
    assert seen == list(restored.skipped)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"event": "checkpoint_skipped", **restored.skipped[0].to_json()} in events


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_explicit_step_uri_that_is_damaged_fails_permanently_naming_the_file(
    tmp_path: Path, damage: str
) -> None:
    saved(tmp_path, 10, 20)
    harm, blamed, _ = DAMAGE[damage]
    harm(tmp_path / "step-00000020")
    with pytest.raises(WorkerError) as e:
        checkpoint.load_pretrained(f"file://{tmp_path}/step-00000020")
    assert e.value.exit_code == ExitCode.BAD_DATA
    assert f"{tmp_path}/step-00000020/{blamed}" in e.value.message
    # The root names the newest intact checkpoint instead.
    assert isinstance(checkpoint.load_pretrained(f"file://{tmp_path}"), Transformer)


def test_with_no_intact_checkpoint_the_run_fails_naming_each_file_and_the_rule(
    tmp_path: Path,
) -> None:
    saved(tmp_path, 10, 20)
    truncate(tmp_path / "step-00000020" / checkpoint.MODEL_FILE)
    flip_a_byte(tmp_path / "step-00000010" / checkpoint.OPTIMIZER_FILE)
    model, optimizer = model_and_optimizer()
    with pytest.raises(WorkerError) as e:
        checkpoint.restore_latest(open_store(str(tmp_path)), model, optimizer)
    assert e.value.exit_code == ExitCode.BAD_DATA
    assert "no intact checkpoint" in e.value.message
    assert "step-00000020/model.safetensors: size" in e.value.message
    assert "step-00000010/optimizer.safetensors: sha256" in e.value.message
    assert checksums.RULE in e.value.message


def test_a_checkpoint_from_before_checksums_still_loads_unverified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = saved(tmp_path, 10)
    manifest_path = tmp_path / "step-00000010" / checkpoint.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["checksums"]
    manifest["format"] = 1
    manifest_path.write_text(json.dumps(manifest))
    model, optimizer = model_and_optimizer(seed=99)

    restored = checkpoint.restore_latest(open_store(str(tmp_path)), model, optimizer)

    assert restored is not None
    assert restored.ref.step == 10
    assert not restored.skipped
    assert torch.equal(model.state_dict()["tok_emb.weight"], weights[10]["tok_emb.weight"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["checkpoint_unverified"]
    assert "no checksums" in events[0]["reason"]


def test_an_unverified_checkpoint_with_a_missing_or_unreadable_file_is_still_passed_over(
    tmp_path: Path,
) -> None:
    saved(tmp_path, 10, 20, 30)
    for step in (20, 30):
        path = tmp_path / f"step-{step:08d}" / checkpoint.MANIFEST
        manifest = json.loads(path.read_text())
        del manifest["checksums"]
        path.write_text(json.dumps(manifest))
    (tmp_path / "step-00000030" / checkpoint.rng_file(0)).unlink()
    truncate(tmp_path / "step-00000020" / checkpoint.MODEL_FILE)
    model, optimizer = model_and_optimizer()
    restored = checkpoint.restore_latest(open_store(str(tmp_path)), model, optimizer)
    assert restored is not None
    assert restored.ref.step == 10
    assert [(s.step, s.file) for s in restored.skipped] == [
        (30, checkpoint.rng_file(0)),
        (20, checkpoint.MODEL_FILE),
    ]
    assert "cannot be read" in restored.skipped[1].reason


def test_a_manifest_that_names_a_file_outside_its_folder_is_damaged(tmp_path: Path) -> None:
    saved(tmp_path, 10)
    path = tmp_path / "step-00000010" / checkpoint.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"].append("../../etc/passwd")
    path.write_text(json.dumps(manifest))
    with pytest.raises(checkpoint.CorruptCheckpoint, match="not a plain file name"):
        checkpoint.read_manifest(open_store(str(tmp_path)), 10)


def test_pruning_after_a_fallback_keeps_the_intact_checkpoint_it_just_wrote(
    tmp_path: Path,
) -> None:
    saved(tmp_path, 10, 20)
    truncate(tmp_path / "step-00000020" / checkpoint.MODEL_FILE)
    store = open_store(str(tmp_path))
    model, optimizer = model_and_optimizer()
    restored = checkpoint.restore_latest(store, model, optimizer)
    assert restored is not None
    assert restored.ref.step == 10

    checkpoint.save(store, 15, model, optimizer, {"step": 15}, model.arch, keep=1)
    # The damaged step 20 is newer but does not count: 15 is kept, 10 goes.
    assert checkpoint.complete_steps(store) == [15, 20]
    again = checkpoint.restore_latest(store, model, optimizer)
    assert again is not None
    assert again.ref.step == 15

    # Reaching step 20 again replaces the damaged checkpoint.
    checkpoint.save(store, 20, model, optimizer, {"step": 20}, model.arch, keep=1)
    assert checkpoint.complete_steps(store) == [20]
    latest = checkpoint.restore_latest(store, model, optimizer)
    assert latest is not None
    assert latest.ref.step == 20
    assert not latest.skipped


def test_a_pretraining_run_resumes_past_a_damaged_checkpoint_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the worker's /metrics said once it had resumed: what a substrate's scrape reads.
    said: list[str] = []

    class Watched(Telemetry):
        def on_resume(self, ref: Any) -> None:
            super().on_resume(ref)
            said.append(generate_latest(self.registry).decode())

    monkeypatch.setattr(loop_module, "Telemetry", Watched)
    cfg = tiny_config(steps=12)
    uri = f"file://{tmp_path}/ckpt"
    final = tmp_path / "termination-log"
    ctx = WorkerContext(
        checkpoint_uri=uri, checkpoint_interval=4, checkpoint_keep=0, termination_log=str(final)
    )
    assert run_pretrain(tiny_config(steps=8), ctx) == ExitCode.SUCCEEDED
    truncate(tmp_path / "ckpt" / "step-00000008" / checkpoint.MODEL_FILE)

    assert run_pretrain(cfg, ctx) == ExitCode.SUCCEEDED

    assert json.loads(final.read_text())["progress"]["step"] == 12  # the final word
    [resumed] = said
    [skipped] = parse_damaged(resumed)
    assert skipped.step == 8
    assert skipped.file == checkpoint.MODEL_FILE
    assert skipped.uri == f"{uri}/step-00000008"
    assert "size" in skipped.reason
    assert read_scrape(resumed, datetime.now(UTC)).checkpoint_step == 4  # resumed from 4
    # Step 8 was trained again and saved over the damaged one.
    restored = checkpoint.restore_latest(open_store(uri), *model_and_optimizer())
    assert restored is not None
    assert restored.ref.step == 12
    assert not restored.skipped
    assert checkpoint.complete_steps(open_store(uri)) == [4, 8, 12]


def test_a_skipped_checkpoint_is_counted_and_exported_for_the_platform() -> None:
    skipped = SkippedCheckpoint(6, "file:///c/step-00000006", "manifest.json", "bad")
    restarted = Telemetry("j", "n", 0, total_steps=10)
    restarted.on_checkpoint_skipped(skipped)
    restarted.on_resume(CheckpointRef(4, "file:///c/step-00000004"))

    labels = {"job": "j", "namespace": "n", "rank": "0"}
    assert restarted.registry.get_sample_value(f"{names.CHECKPOINT_CORRUPT_TOTAL}", labels) == 1
    damaged = {**labels, "step": "6", "uri": skipped.uri, "file": "manifest.json", "reason": "bad"}
    assert restarted.registry.get_sample_value(names.CHECKPOINT_DAMAGED, damaged) == 1
    scrape = read_scrape(generate_latest(restarted.registry).decode(), datetime.now(UTC))
    assert scrape.damaged == (DamagedCheckpoint(**skipped.to_json()),)
    assert scrape.checkpoint_step == 4
    # No step of its own yet: the job's status keeps showing the last one it knows.
    assert scrape.progress is None
