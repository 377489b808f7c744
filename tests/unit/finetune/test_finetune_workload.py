"""The finetune workload through the worker contract: dataset, checkpoint, metric, resume."""

from __future__ import annotations

import json
from pathlib import Path

from finetune_fixtures import finetune_spec

from carina.workloads.config import ExitCode, FinetuneConfig
from carina.workloads.finetune.run import run_finetune
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import WorkerContext, main


def test_ssr_run_saves_checkpoint_and_dataset_beside_it(tmp_path, base_uri):
    out = f"file://{tmp_path}/ssr"
    env = {"CARINA_SPEC": finetune_spec(tmp_path, base_uri, "ssr"), "CARINA_CHECKPOINT_URI": out}
    assert main(env) == ExitCode.SUCCEEDED
    store = open_store(out)
    assert checkpoint.latest(store).step == 3
    rows = [json.loads(line) for line in store.get_bytes("ssr-dataset.jsonl").splitlines()]
    assert len(rows) == 12
    for row in rows:
        assert row["target"] == (row["model_answer"] if row["accepted"] else row["gold"])
    manifest = checkpoint.read_manifest(store, 3)
    assert manifest["trainer"]["mode"] == "ssr"
    assert 0.0 <= manifest["trainer"]["acceptanceRatio"] <= 1.0


def test_sft_run_trains_on_gold_and_a_rerun_resumes_without_retraining(tmp_path, base_uri):
    out = f"file://{tmp_path}/sft"
    env = {"CARINA_SPEC": finetune_spec(tmp_path, base_uri, "sft"), "CARINA_CHECKPOINT_URI": out}
    assert main(env) == ExitCode.SUCCEEDED
    rows = [json.loads(x) for x in open_store(out).get_bytes("ssr-dataset.jsonl").splitlines()]
    assert all(r["target"] == r["gold"] and r["model_answer"] is None for r in rows)
    assert main(env) == ExitCode.SUCCEEDED  # complete: nothing left to do
    assert checkpoint.complete_steps(open_store(out)) == [3]


def test_preemption_saves_and_exits_75(tmp_path, base_uri, monkeypatch):
    import carina.workloads.runtime.loop as loop

    cfg = FinetuneConfig.model_validate(
        json.loads(Path(finetune_spec(tmp_path, base_uri, "sft")).read_text())["config"]
    )
    log = tmp_path / "termination-log"
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/pre", termination_log=str(log))

    class RequestedFlag(loop.PreemptionFlag):
        def install(self):
            self.requested = True
            return self

    monkeypatch.setattr(loop, "PreemptionFlag", RequestedFlag)
    assert run_finetune(cfg, ctx) == ExitCode.PREEMPTED
    assert json.loads(log.read_text())["checkpoint"]["step"] == 0


def test_steps_report_mfu_from_the_flops_of_every_token_the_model_reads(
    tmp_path, base_uri, make_model, capsys, monkeypatch
):
    from carina.workloads.runtime.loop import StepRecord

    monkeypatch.setenv("CARINA_PEAK_FLOPS", "1")  # MFU then reads as model FLOPs per second
    cfg = FinetuneConfig.model_validate(
        json.loads(Path(finetune_spec(tmp_path, base_uri, "sft")).read_text())["config"]
    )
    records: list[StepRecord] = []
    assert run_finetune(cfg, WorkerContext(), lambda rec, _: records.append(rec)) == 0
    steps = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    steps = [e for e in steps if e["event"] == "step"]
    assert [e["step"] for e in steps] == [r.step for r in records] == [1, 2, 3]
    six_n = 6 * make_model().num_params(exclude_embedding=True)
    for e in steps:
        # Each trained (response) token costs its own 6·N and a share of its prompt's.
        assert e["mfu"] / e["tokensPerSecond"] > six_n
        assert e["seconds"] > 0


def test_missing_base_is_a_permanent_error(tmp_path):
    env = {"CARINA_SPEC": finetune_spec(tmp_path, f"file://{tmp_path}/nothing", "sft")}
    assert main(env) == ExitCode.NO_INPUT


def test_acceptance_ratio_is_exported_as_a_metric(tmp_path, base_uri):
    from carina.workloads import metric_names
    from carina.workloads.finetune.run import Finetuner
    from carina.workloads.runtime import distributed
    from carina.workloads.runtime.distributed import PreemptionFlag

    raw = json.loads(Path(finetune_spec(tmp_path, base_uri, "ssr")).read_text())["config"]
    cfg = FinetuneConfig.model_validate(raw)
    ctx = WorkerContext(job="ft", checkpoint_uri=f"file://{tmp_path}/m")
    tuner = Finetuner(cfg, ctx, distributed.setup(0, 1, 0), PreemptionFlag())
    labels = {"job": "ft", "namespace": "default", "rank": "0"}
    value = tuner.telemetry.registry.get_sample_value(
        metric_names.FINETUNE_SSR_ACCEPTANCE_RATIO, labels
    )
    rows = open_store(ctx.checkpoint_uri).get_bytes("ssr-dataset.jsonl").splitlines()
    assert value == sum(json.loads(r)["accepted"] for r in rows) / len(rows)
    tuner.close()
