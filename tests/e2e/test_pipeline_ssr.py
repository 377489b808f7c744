"""The SSR pipeline of examples/pipeline-ssr.yaml, shrunk, on the embedded platform.

pretrain -> finetune (ssr) -> evaluate, submitted at once with `carina submit` against
`carina up`: each stage names the one before by `job://<name>`, waits (no worker) until it
has Succeeded, then reads its final checkpoint. No stage restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from embedded_platform import REAL_WORKER, CarinaUp, wait_for_phase

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline-ssr.yaml"
PRETRAIN_STEPS = 30
FINETUNE_STEPS = 6


def shrink(jobs: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """The example's jobs at test size, the report's URI moved under `root`."""
    text = yaml.safe_dump_all(jobs).replace("/tmp/carina/default/pipeline-ssr", str(root))
    pretrain, finetune, evaluate = yaml.safe_load_all(text)
    for job in (pretrain, finetune, evaluate):
        job["spec"]["resources"]["cpu"] = 1
    pretrain["spec"]["workload"]["pretrain"].update(
        steps=PRETRAIN_STEPS,
        seqLen=64,
        batchSize=8,
        microBatchSize=8,
        evalEvery=0,
        data={"source": "python-stdlib", "maxBytes": 400_000},
        schedule={"kind": "wsd", "warmupSteps": 5},
    )
    pretrain["spec"]["checkpoint"]["intervalSteps"] = 10
    finetune["spec"]["workload"]["finetune"].update(
        steps=FINETUNE_STEPS,
        batchSize=4,
        microBatchSize=4,
        maxNewTokens=8,
        data={"generator": "grounded-qa", "examples": 16, "seed": 1},
    )
    for task in evaluate["spec"]["workload"]["evaluate"]["tasks"]:
        task["data"]["examples"] = 12
    evaluate["spec"]["workload"]["evaluate"]["maxNewTokens"] = 8
    return [pretrain, finetune, evaluate]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    # The report goes to a folder of the test's: a root the namespace may use.
    roots = json.dumps([str(tmp_path / "ckpt")])
    env = {"OMP_NUM_THREADS": "1", "CARINA_LOCAL_ROOTS": roots}
    up = CarinaUp(tmp_path / "state", REAL_WORKER, env=env).start()
    try:
        yield up
    finally:
        up.stop()


def test_pretrain_finetune_ssr_evaluate_pipeline_submitted_at_once_runs_to_a_report(
    tmp_path: Path, platform: CarinaUp
) -> None:
    jobs = shrink(list(yaml.safe_load_all(EXAMPLE.read_text())), tmp_path / "ckpt")
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(yaml.safe_dump_all(jobs))
    token = (platform.state_dir / "token").read_text().strip()
    submitted = subprocess.run(
        [
            sys.executable,
            "-m",
            "carina.platform",
            "submit",
            str(manifest),
            "--server",
            platform.url,
            "--token",
            token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert submitted.stdout.count("created") == 3

    client = platform.client()
    names = ("ssr-pretrain", "ssr-finetune", "ssr-evaluate")
    final = {n: wait_for_phase(client, n, ["Succeeded", "Failed"], 600)["status"] for n in names}
    assert {n: s["phase"] for n, s in final.items()} == dict.fromkeys(names, "Succeeded")
    assert [s["restarts"] for s in final.values()] == [0, 0, 0]
    pretrain, finetune, evaluate = final.values()
    # In order: no stage's workers started before the stage it reads had finished.
    assert finetune["startTime"] >= pretrain["completionTime"]
    assert evaluate["startTime"] >= finetune["completionTime"]
    assert finetune["inputs"] == [
        {
            "field": "spec.workload.finetune.base",
            "job": "ssr-pretrain",
            "uri": pretrain["lastCheckpoint"]["uri"],
            "step": PRETRAIN_STEPS,
        }
    ]
    assert pretrain["lastCheckpoint"]["uri"].endswith(f"/step-{PRETRAIN_STEPS:08d}")

    tuned = Path(urlparse(finetune["lastCheckpoint"]["uri"]).path)
    assert tuned.name == f"step-{FINETUNE_STEPS:08d}"
    assert (tuned / "manifest.json").exists()
    rows = [json.loads(x) for x in (tuned.parent / "ssr-dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    assert all(r["target"] == (r["model_answer"] if r["accepted"] else r["gold"]) for r in rows)

    report = json.loads((tmp_path / "ckpt" / "evaluate" / "report.json").read_text())
    assert [t["name"] for t in report["tasks"]] == [
        "grounded-qa",
        "code-choice",
        "stdlib-perplexity",
    ]
    assert report["heldOutTasks"] == 2
    assert report["averageDrop"] is not None
    assert (tmp_path / "ckpt" / "evaluate" / "report.md").read_text().startswith("# Evaluation")
