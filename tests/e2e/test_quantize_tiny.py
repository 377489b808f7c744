"""A tiny `quantize` job end to end: a base model from a few pretraining steps, then QAT with
kurtosis regularization, GPTQ, the packed checkpoint and its report.

The pipeline runs through the embedded platform (`carina run`); preemption and restarts run
the worker itself under the contract's environment, which is what a substrate does.
Sized for two CPU cores: the tiny preset, synthetic text, sequences of 64 tokens.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from builders import make_job

from carina.workloads.config import DataSpec
from carina.workloads.data import build_corpus
from carina.workloads.quantize.report import perplexity
from carina.workloads.runtime import packed
from carina.workloads.runtime.storage import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATA = {"source": "synthetic"}


def quantize_config(base: str, **overrides: Any) -> dict[str, Any]:
    config = {
        "base": base,
        "method": "qat-kurtosis",
        "steps": 12,
        "groupSize": 32,
        "weightPtq": "gptq",
        "kurtosisLambda": 0.01,
        "data": DATA,
        "seqLen": 64,
        "batchSize": 8,
        "calibrationBatches": 2,
        "evalBatches": 2,
        "schedule": {"warmupSteps": 2},
    }
    config.update(overrides)
    return config


def carina_run(manifest: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if k not in ("CARINA_SERVER", "CARINA_TOKEN")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "carina.platform",
            "run",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        # The pretrained base lives in the test's folder: a root the namespace may use.
        env={**env, "CARINA_SERVER": "", "CARINA_LOCAL_ROOTS": json.dumps([str(tmp_path.parent)])},
        cwd=tmp_path,
    )


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny model pretrained for a few steps through `carina run`."""
    tmp = tmp_path_factory.mktemp("base")
    uri = (tmp / "ckpt").as_uri()
    job = (
        make_job("quantize-base")
        .with_pretrain(
            model={"preset": "tiny", "maxSeqLen": 64},
            data=DATA,
            steps=30,
            batchSize=8,
            microBatchSize=8,
            seqLen=64,
            evalEvery=0,
            schedule={"warmupSteps": 3},
        )
        .with_spec(checkpoint={"uri": uri})
    )
    result = carina_run(dict(job), tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    return uri


def test_a_quantize_job_writes_a_packed_checkpoint_and_a_report(
    base_checkpoint: str, tmp_path: Path
) -> None:
    out = (tmp_path / "w4a4").as_uri()
    job = make_job("quantize-tiny").with_spec(
        workload={"quantize": quantize_config(base_checkpoint)}, checkpoint={"uri": out}
    )
    result = carina_run(dict(job), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "quantize-tiny: Succeeded" in result.stdout

    store = open_store(out)
    report = json.loads((tmp_path / "w4a4" / "quantized" / "report.json").read_text())
    assert set(report["perplexity"]) == {"w16a16", "w4a16", "w4a4"}
    assert all(math.isfinite(v) and v > 1 for v in report["perplexity"].values())
    assert report["perplexity"]["w4a4"] < 2 * report["perplexity"]["w16a16"]
    assert len(report["layers"]) == 14  # 2 blocks x 7 linear layers
    assert "| W4A4 |" in (tmp_path / "w4a4" / "quantized" / "report.md").read_text()

    # The packed checkpoint alone reproduces the reported W4A4 perplexity.
    model, qweights, manifest = packed.load_quantized(store)
    assert manifest["packing"] == "int4x2-low-first"
    assert all(qw.codes.max() <= 15 for qw in qweights.values())
    corpus = build_corpus(DataSpec(**DATA), 64, 1234)
    ppl, _ = perplexity(model, corpus.val, 16, 8, torch.device("cpu"))
    assert ppl == pytest.approx(report["perplexity"]["w4a4"], rel=1e-4)


def worker(spec: dict[str, Any], ckpt: str, tmp_path: Path) -> subprocess.Popen[str]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "CARINA_SPEC": str(spec_file),
        "CARINA_CHECKPOINT_URI": ckpt,
        "CARINA_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "CARINA_CHECKPOINT_INTERVAL": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "carina.workloads"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_preempted_quantize_job_resumes_its_qat_and_a_finished_one_stays_done(
    base_checkpoint: str, tmp_path: Path
) -> None:
    ckpt = (tmp_path / "out").as_uri()
    spec = {"kind": "quantize", "config": quantize_config(base_checkpoint, steps=200)}
    proc = worker(spec, ckpt, tmp_path)
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if '"event": "step", "step": 3,' in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 75, "".join(seen)
    ack = json.loads((tmp_path / "termination-log").read_text())
    stopped_at = ack["checkpoint"]["step"]
    assert 3 <= stopped_at < 200

    spec["config"]["steps"] = stopped_at + 4  # the same run, shortened to keep the test quick
    proc = worker(spec, ckpt, tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    log = events(out.splitlines())
    assert any(e["event"] == "resumed" and e["step"] == stopped_at for e in log)
    steps = [e["step"] for e in log if e["event"] == "step"]
    assert steps == list(range(stopped_at + 1, stopped_at + 5))
    assert any(e["event"] == "quantized" for e in log)

    proc = worker(spec, ckpt, tmp_path)  # restarted after success: nothing left to do
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert [e.get("alreadyComplete") for e in events(out.splitlines())] == [True]
