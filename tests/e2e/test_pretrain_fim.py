"""Short pretraining runs with fill-in-the-middle, evaluated by the evaluate worker.

The runs train through the pretrain workload (one CPU rank, checkpoints on disk); the
evaluate worker then scores a FIM checkpoint on infilling and left-to-right perplexity beside
a checkpoint trained without FIM, whose smaller vocabulary still loads and evaluates. The
shipped curriculum example (FIM code, instructions and safety sources in two stages) trains
with its step counts cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from carina.workloads.config import ExitCode, PretrainConfig
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import WorkerContext, main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CODE = "def double(x):\n    return 2 * x\n\n\nprint(double(21))\n"


def pretrain(tmp_path: Path, name: str, fim: dict[str, float] | None) -> str:
    corpus = tmp_path / "code"
    corpus.mkdir(exist_ok=True)
    for i in range(40):
        (corpus / f"m{i:02d}.py").write_text(CODE.replace("double", f"double{i}"))
    data: dict[str, Any] = {"source": "files", "paths": [f"{corpus}/*.py"], "valFraction": 0.1}
    if fim is not None:
        data["fim"] = fim
    cfg = PretrainConfig.model_validate(
        {
            "model": {"preset": "tiny", "dModel": 32, "nLayers": 1, "maxSeqLen": 64},
            "data": data,
            "steps": 12,
            "batchSize": 8,
            "microBatchSize": 8,
            "seqLen": 64,
            "evalEvery": 12,
            "schedule": {"warmupSteps": 2},
        }
    )
    uri = f"file://{tmp_path}/{name}"
    assert run_pretrain(cfg, WorkerContext(checkpoint_uri=uri)) == ExitCode.SUCCEEDED
    return uri


def test_a_fim_checkpoint_has_the_sentinels_and_is_scored_on_infilling(tmp_path: Path) -> None:
    fim = pretrain(tmp_path, "fim", {"rate": 0.5, "spmRate": 0.5})
    plain = pretrain(tmp_path, "plain", None)
    assert checkpoint.load_pretrained(fim).arch.vocab_size == 264
    assert checkpoint.load_pretrained(plain).arch.vocab_size == 260
    docs = tmp_path / "held.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": CODE.replace("double", f"half{i}")}) + "\n" for i in range(4))
    )
    text = {"path": str(docs), "format": "text"}
    tasks = [
        {"name": "infill", "kind": "infill", "data": {**text, "examples": 6}},
        {"name": "l2r", "kind": "perplexity", "data": text},
    ]
    out = f"file://{tmp_path}/eval"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "evaluate", "config": {"base": fim, "tasks": tasks}}))
    assert main({"CARINA_SPEC": str(spec), "CARINA_CHECKPOINT_URI": out}) == ExitCode.SUCCEEDED
    report = json.loads(open_store(out).get_bytes("report.json") or b"{}")
    infill, l2r = report["tasks"]
    assert infill["metric"] == "exactMatch"
    assert infill["metrics"]["items"] == 6
    assert 0.0 <= infill["score"] <= 1.0
    assert l2r["score"] > 1.0
    # The checkpoint without FIM still evaluates on perplexity; infilling says why it cannot.
    spec.write_text(json.dumps({"kind": "evaluate", "config": {"base": plain, "tasks": tasks[1:]}}))
    assert (
        main({"CARINA_SPEC": str(spec), "CARINA_CHECKPOINT_URI": out + "2"}) == ExitCode.SUCCEEDED
    )
    spec.write_text(json.dumps({"kind": "evaluate", "config": {"base": plain, "tasks": tasks[:1]}}))
    assert (
        main({"CARINA_SPEC": str(spec), "CARINA_CHECKPOINT_URI": out + "3"}) == ExitCode.BAD_CONFIG
    )


def test_the_curriculum_example_trains_both_stages_with_fim_and_the_alignment_sources(
    tmp_path: Path,
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "curriculum-tiny.yaml").read_text())
    config = manifest["spec"]["workload"]["pretrain"]
    config["sources"]["code"]["maxBytes"] = 300_000
    for stage in config["stages"]:
        stage.update(steps=4, schedule={"kind": "wsd", "warmupSteps": 1})
    config.update(steps=8, evalEvery=0, batchSize=4, microBatchSize=4, schedule={"warmupSteps": 1})
    uri = f"file://{tmp_path}/ckpt"
    cfg = PretrainConfig.model_validate(config)
    assert run_pretrain(cfg, WorkerContext(checkpoint_uri=uri)) == ExitCode.SUCCEEDED
    assert checkpoint.load_pretrained(uri).arch.vocab_size == 264
    general_end = checkpoint.load_pretrained(f"{uri}/step-00000004")  # the stage's pinned end
    assert general_end.arch.vocab_size == 264
