"""The quantize workload in the shared run loop: MFU from the model, SIGTERM and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from quantize_builders import tiny_model

from carina.workloads.config import ExitCode, QuantizeConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.data import build_corpus
from carina.workloads.quantize.report import perplexity
from carina.workloads.quantize.workload import run_quantize
from carina.workloads.runtime import checkpoint, packed
from carina.workloads.runtime.flops import flops_per_token
from carina.workloads.runtime.storage import open_store

torch.set_num_threads(1)


def quantize_config(base: str, steps: int = 3) -> QuantizeConfig:
    return QuantizeConfig.model_validate(
        {
            "base": base,
            "method": "qat-kurtosis",
            "steps": steps,
            "groupSize": 16,
            "weightPtq": "rtn",
            "data": {"source": "synthetic", "valFraction": 0.2},
            "seqLen": 32,
            "batchSize": 4,
            "calibrationBatches": 1,
            "evalBatches": 1,
            "schedule": {"kind": "constant", "warmupSteps": 0},
        }
    )


@pytest.fixture
def base(tmp_path: Path) -> str:
    model = tiny_model()
    uri = f"file://{tmp_path}/base"
    checkpoint.save(
        open_store(uri), 1, model, torch.optim.AdamW(model.parameters()), {}, model.arch
    )
    return uri


def step_events(out: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, out.splitlines()) if e["event"] == "step"]


def test_qat_steps_report_mfu_from_the_models_flops_per_token(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARINA_PEAK_FLOPS", "1")  # MFU then reads as model FLOPs per second
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/q")
    cfg = quantize_config(base)
    assert run_quantize(cfg, ctx) == ExitCode.SUCCEEDED
    steps = step_events(capsys.readouterr().out)
    assert [e["step"] for e in steps] == [1, 2, 3]
    model = tiny_model()  # the base, before quantizers add their clip values
    per_token = flops_per_token(model.num_params(exclude_embedding=True), model.arch, cfg.seq_len)
    for e in steps:
        assert e["mfu"] == pytest.approx(e["tokensPerSecond"] * per_token, rel=1e-3)
        assert {"ce", "kurtosis", "loss", "lr"} <= e.keys()


def test_a_preempted_qat_acknowledges_its_checkpoint_and_resumes_from_it(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import carina.workloads.runtime.loop as loop

    class RequestedFlag(loop.PreemptionFlag):
        def install(self) -> RequestedFlag:
            self.requested = True
            return self

    log = tmp_path / "termination-log"
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/q", termination_log=str(log))
    with monkeypatch.context() as m:
        m.setattr(loop, "PreemptionFlag", RequestedFlag)
        assert run_quantize(quantize_config(base), ctx) == ExitCode.PREEMPTED
    ack = json.loads(log.read_text())["checkpoint"]
    assert ack == {"step": 0, "uri": f"file://{tmp_path}/q/step-00000000"}
    capsys.readouterr()

    assert run_quantize(quantize_config(base), ctx) == ExitCode.SUCCEEDED
    out = capsys.readouterr().out
    events = [json.loads(line) for line in out.splitlines()]
    assert {"event": "resumed", "step": 0}.items() <= events[1].items()
    assert [e["step"] for e in step_events(out)] == [1, 2, 3]
    assert packed.read_manifest(open_store(ctx.checkpoint_uri)) is not None


def test_the_report_compares_every_precision_with_the_base_models_w16a16(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # After QAT the run's own W16A16 is the fine-tuned weights; the paper's reference is the
    # base model itself, evaluated on the same held-out windows.
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/q")
    cfg = quantize_config(base)
    assert run_quantize(cfg, ctx) == ExitCode.SUCCEEDED
    capsys.readouterr()
    store = open_store(ctx.checkpoint_uri)
    report = json.loads(store.get_bytes(f"{packed.DIRECTORY}/report.json") or b"{}")
    model = checkpoint.load_pretrained(base)
    windows = build_corpus(cfg.data, cfg.seq_len, cfg.seed).val
    expected, _ = perplexity(model, windows, cfg.batch_size, cfg.batch_size, torch.device("cpu"))
    assert report["basePerplexity"] == pytest.approx(expected, rel=1e-6)
    assert report["basePerplexity"] != report["perplexity"]["w16a16"]
    for key, ppl in report["perplexity"].items():
        assert report["gapToBase"][key] == pytest.approx(ppl - expected)
    markdown = (store.get_bytes(f"{packed.DIRECTORY}/report.md") or b"").decode()
    assert f"| base W16A16 | {expected:.3f} |" in markdown


def test_the_final_word_names_the_quantized_checkpoint_and_a_restart_repeats_it(
    base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The platform turns the final word into status.lastCheckpoint: `job://<this job>` then
    # resolves to the packed model, at the QAT step it was made from.
    log = tmp_path / "termination-log"
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/q", termination_log=str(log))
    assert run_quantize(quantize_config(base), ctx) == ExitCode.SUCCEEDED
    said = json.loads(log.read_text())
    assert said["checkpoint"] == {"step": 3, "uri": f"file://{tmp_path}/q/quantized"}
    assert said["progress"]["step"] == 3
    log.unlink()

    assert run_quantize(quantize_config(base), ctx) == ExitCode.SUCCEEDED
    assert json.loads(log.read_text())["checkpoint"] == said["checkpoint"]
    assert '"alreadyComplete": true' in capsys.readouterr().out
