"""The evaluate workload through the worker contract: a report comparing two checkpoints,
full-precision or packed W4A4."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from carina.workloads.config import ExitCode, ModelSpec
from carina.workloads.evaluate.run import load_model
from carina.workloads.models.quant_layers import (
    attach_quantizers,
    calibrate_clip_values,
    quant_layers,
)
from carina.workloads.models.transformer import Transformer
from carina.workloads.quantize.ptq import quantize_model_weights
from carina.workloads.runtime import checkpoint, packed
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import main

DATA = Path(__file__).parents[2] / "data"


def tiny_model(seed: int) -> Transformer:
    """One layer with a 64-token window: the sample text fills one perplexity window."""
    torch.manual_seed(seed)
    spec = ModelSpec(preset="tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, max_seq_len=64)
    return Transformer(spec.resolve())


def save_model(uri: str, seed: int) -> None:
    model = tiny_model(seed)
    checkpoint.save(
        open_store(uri), 1, model, torch.optim.AdamW(model.parameters()), {}, model.arch
    )


def save_quantized_model(root: str, seed: int) -> str:
    """A tiny model at W4A4 (RTN weights, calibrated clip values), packed under `root`; the
    URI of its quantized checkpoint, as a quantize job names it."""
    model = tiny_model(seed)
    layers = attach_quantizers(model, 4)
    calibrate_clip_values(model, [torch.randint(0, 256, (2, 32))])
    qweights = quantize_model_weights(model, "rtn", 4, 16, [], quantize_activations=True)
    clips = {n: (m.act_quant.lower.item(), m.act_quant.upper.item()) for n, m in layers.items()}
    meta = {"weightBits": 4, "activationBits": 4, "groupSize": 16, "qatSteps": 0}
    return packed.save_quantized(open_store(root), model, model.arch, qweights, clips, meta)


TASKS = [
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
]


def evaluate(tmp_path: Path, config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Run the evaluate worker on `config`; its report.json and report.md."""
    out = f"file://{tmp_path}/eval"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "evaluate", "config": config}))
    assert main({"CARINA_SPEC": str(spec), "CARINA_CHECKPOINT_URI": out}) == ExitCode.SUCCEEDED
    store = open_store(out)
    report = json.loads(store.get_bytes("report.json") or b"{}")
    return report, (store.get_bytes("report.md") or b"").decode()


def test_report_compares_checkpoint_with_base_on_every_task(tmp_path):
    base, tuned = (f"file://{tmp_path}/{n}" for n in ("base", "tuned"))
    save_model(base, 0)
    save_model(tuned, 1)
    report, markdown = evaluate(
        tmp_path, {"base": tuned, "compareTo": base, "maxNewTokens": 4, "tasks": TASKS}
    )
    assert [t["name"] for t in report["tasks"]] == ["qa", "mmlu", "hellaswag", "text"]
    assert report["heldOutTasks"] == 3
    for task in report["tasks"]:
        assert "baselineScore" in task
        assert "relativeDrop" in task
    assert report["tasks"][1]["n"] == 3
    assert (report["modelPrecision"], report["baselinePrecision"]) == ("W16A16", "W16A16")
    assert "| mmlu | multiple-choice | accuracy |" in markdown


def test_a_packed_quantized_model_is_evaluated_as_stored_against_full_precision(tmp_path):
    full = f"file://{tmp_path}/full"
    save_model(full, 0)
    quantized = save_quantized_model(f"file://{tmp_path}/quantize", 0)
    assert quantized == f"file://{tmp_path}/quantize/quantized"
    report, markdown = evaluate(
        tmp_path, {"base": quantized, "compareTo": full, "maxNewTokens": 4, "tasks": TASKS}
    )
    assert (report["modelPrecision"], report["baselinePrecision"]) == ("W4A4", "W16A16")
    assert f"# Evaluation of `{quantized}` (W4A4)" in markdown
    assert f"Baseline: `{full}` (W16A16)" in markdown
    assert report["heldOutTasks"] == 3
    text = next(t for t in report["tasks"] if t["name"] == "text")
    # The same weights at W4A4: a perplexity of their own, not the full-precision one.
    assert text["score"] != text["baselineScore"]
    assert all(math.isfinite(t["score"]) for t in report["tasks"])


def test_the_quantized_model_runs_the_stored_int4_weights_and_clip_values(tmp_path):
    quantized = save_quantized_model(f"file://{tmp_path}/quantize", 0)
    model, precision = load_model(quantized, "cpu")
    stored, _, _ = packed.load_quantized(open_store(f"file://{tmp_path}/quantize"))
    idx = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    model.eval(), stored.eval()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], stored(idx)[0])
    assert precision == "W4A4"
    layers = quant_layers(model)
    assert layers
    assert all(m.use_quantized_weight and m.act_quant.enabled for m in layers.values())


def test_a_checkpoint_root_is_not_taken_for_a_quantized_checkpoint(tmp_path):
    uri = f"file://{tmp_path}/m"
    save_model(uri, 0)
    assert packed.find_quantized(uri) is None
    assert packed.find_quantized(f"{uri}/quantized") is None
    assert load_model(uri, "cpu")[1] == "W16A16"


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
