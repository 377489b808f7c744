"""The whole chain of examples/pipeline-full.yaml, shrunk, on the embedded platform.

pretrain -> continued pretraining (longer sequences, `init` from the first) -> SSR
fine-tune -> W4A4 quantize -> an evaluation of the packed W4A4 model against the fine-tune:
five jobs submitted at once, run in order.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from embedded_platform import REAL_WORKER, CarinaUp, wait_for_phase

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline-full.yaml"
NAMES = ("full-pretrain", "full-continue", "full-finetune", "full-quantize", "full-evaluate")


def shrink(jobs: list[dict[str, Any]], root: Path) -> dict[str, dict[str, Any]]:
    """The example's jobs at test size, their report URIs moved under `root`."""
    text = yaml.safe_dump_all(jobs).replace("/tmp/carina/default/pipeline-full", str(root))
    by_name = {j["metadata"]["name"]: j for j in yaml.safe_load_all(text)}
    for job in by_name.values():
        job["spec"]["resources"]["cpu"] = 1
    small = {"data": {"source": "python-stdlib", "maxBytes": 200_000}, "evalEvery": 0}
    by_name["full-pretrain"]["spec"]["workload"]["pretrain"].update(
        steps=20, seqLen=32, batchSize=8, microBatchSize=8, **small
    )
    by_name["full-continue"]["spec"]["workload"]["pretrain"].update(
        steps=10, seqLen=64, batchSize=4, microBatchSize=4, **small
    )
    for name in ("full-pretrain", "full-continue"):
        by_name[name]["spec"]["workload"]["pretrain"]["schedule"]["warmupSteps"] = 2
        by_name[name]["spec"]["checkpoint"]["intervalSteps"] = 5
    by_name["full-finetune"]["spec"]["workload"]["finetune"].update(
        steps=4,
        batchSize=4,
        microBatchSize=4,
        maxNewTokens=8,
        data={"generator": "grounded-qa", "examples": 8, "seed": 1},
    )
    by_name["full-quantize"]["spec"]["workload"]["quantize"].update(
        steps=4,
        calibrationBatches=1,
        evalBatches=1,
        batchSize=4,
        seqLen=32,
        data={"source": "python-stdlib", "maxBytes": 200_000},
    )
    evaluate = by_name["full-evaluate"]["spec"]["workload"]["evaluate"]
    evaluate["maxNewTokens"] = 8
    for task in evaluate["tasks"]:
        task["data"]["examples"] = 8
    return by_name


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    roots = json.dumps([str(tmp_path / "reports")])
    env = {"OMP_NUM_THREADS": "1", "CARINA_LOCAL_ROOTS": roots}
    up = CarinaUp(tmp_path / "state", REAL_WORKER, env=env).start()
    try:
        yield up
    finally:
        up.stop()


def test_the_whole_chain_submitted_at_once_runs_stage_by_stage(
    tmp_path: Path, platform: CarinaUp
) -> None:
    jobs = shrink(list(yaml.safe_load_all(EXAMPLE.read_text())), tmp_path / "reports")
    client = platform.client()
    for name in reversed(NAMES):  # downstream first: each waits for what it names
        client.create("default", jobs[name])

    final = {n: wait_for_phase(client, n, ["Succeeded", "Failed"], 900)["status"] for n in NAMES}
    assert {n: s["phase"] for n, s in final.items()} == dict.fromkeys(NAMES, "Succeeded")
    assert [s["restarts"] for s in final.values()] == [0] * len(NAMES)
    for upstream, downstream in itertools.pairwise(NAMES):
        assert final[downstream]["startTime"] >= final[upstream]["completionTime"]

    pretrain, cont, tuned, quantize = (final[n] for n in NAMES[:4])
    assert cont["inputs"][0]["uri"] == pretrain["lastCheckpoint"]["uri"]
    assert quantize["inputs"][0]["uri"] == tuned["lastCheckpoint"]["uri"]
    # The quantize job's final checkpoint is its packed model, made from its last QAT step.
    packed_uri = f"file://{tmp_path}/reports/quantize/quantized"
    assert quantize["lastCheckpoint"]["uri"] == packed_uri
    assert quantize["lastCheckpoint"]["step"] == 4
    assert final["full-evaluate"]["inputs"] == [
        {
            "field": "spec.workload.evaluate.base",
            "job": "full-quantize",
            "uri": packed_uri,
            "step": 4,
        },
        {
            "field": "spec.workload.evaluate.compareTo",
            "job": "full-finetune",
            "uri": tuned["lastCheckpoint"]["uri"],
            "step": 4,
        },
    ]

    quantized = json.loads((tmp_path / "reports/quantize/quantized/report.json").read_text())
    assert set(quantized["perplexity"]) == {"w16a16", "w4a16", "w4a4"}
    report = json.loads((tmp_path / "reports/evaluate/report.json").read_text())
    assert (report["model"], report["modelPrecision"]) == (packed_uri, "W4A4")
    assert (report["baseline"], report["baselinePrecision"]) == (
        tuned["lastCheckpoint"]["uri"],
        "W16A16",
    )
    assert report["averageDrop"] is not None
