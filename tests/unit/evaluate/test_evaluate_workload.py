"""The evaluate workload through the worker contract: a report comparing two checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from carina.workloads.config import ExitCode, ModelSpec
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import main

DATA = Path(__file__).parents[2] / "data"


def save_model(uri: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = Transformer(
        ModelSpec(preset="tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=2).resolve()
    )
    checkpoint.save(
        open_store(uri), 1, model, torch.optim.AdamW(model.parameters()), {}, model.arch
    )


def test_report_compares_checkpoint_with_base_on_every_task(tmp_path):
    base, tuned, out = (f"file://{tmp_path}/{n}" for n in ("base", "tuned", "eval"))
    save_model(base, 0)
    save_model(tuned, 1)
    config = {
        "base": tuned,
        "compareTo": base,
        "maxNewTokens": 4,
        "tasks": [
            {
                "name": "qa",
                "kind": "refusal",
                "target": True,
                "data": {"path": str(DATA / "squad2_sample.jsonl"), "format": "squad2"},
            },
            {
                "name": "mmlu",
                "kind": "multiple-choice",
                "data": {"path": str(DATA / "mmlu_sample.jsonl"), "format": "mmlu"},
            },
            {
                "name": "hellaswag",
                "kind": "multiple-choice",
                "data": {"path": str(DATA / "hellaswag_sample.jsonl"), "format": "hellaswag"},
            },
            {
                "name": "text",
                "kind": "perplexity",
                "data": {"path": str(DATA / "text_sample.jsonl"), "format": "text"},
            },
        ],
    }
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "evaluate", "config": config}))
    assert main({"CARINA_SPEC": str(spec), "CARINA_CHECKPOINT_URI": out}) == ExitCode.SUCCEEDED
    store = open_store(out)
    report = json.loads(store.get_bytes("report.json"))
    assert [t["name"] for t in report["tasks"]] == ["qa", "mmlu", "hellaswag", "text"]
    assert report["heldOutTasks"] == 3
    for task in report["tasks"]:
        assert "baselineScore" in task
        assert "relativeDrop" in task
    assert report["tasks"][1]["n"] == 3
    assert "| mmlu | multiple-choice | accuracy |" in store.get_bytes("report.md").decode()


def test_wrong_data_for_a_task_kind_is_a_config_error(tmp_path):
    uri = f"file://{tmp_path}/m"
    save_model(uri, 0)
    config = {
        "base": uri,
        "tasks": [
            {
                "name": "x",
                "kind": "multiple-choice",
                "data": {"path": str(DATA / "squad2_sample.jsonl"), "format": "squad2"},
            }
        ],
    }
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "evaluate", "config": config}))
    assert main({"CARINA_SPEC": str(spec)}) == ExitCode.BAD_CONFIG
