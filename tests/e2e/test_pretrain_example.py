"""The shipped `pretrain-tiny` example, run the way the embedded substrate runs it.

Two worker processes get the torchrun variables directly (no launcher), as
platform/embedded does, so each one's exit code is the contract's. The step count is cut to
keep the test short; everything else is the example's configuration.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carina.workloads.config import PretrainConfig
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pretrain_tiny_example_trains_on_two_workers(tmp_path: Path) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "pretrain-tiny.yaml").read_text())
    config = manifest["spec"]["workload"]["pretrain"]
    config.update(steps=60, evalEvery=30, logEvery=10)
    config["schedule"]["warmupSteps"] = 10
    PretrainConfig.model_validate(config)  # the example is a valid worker config
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "pretrain", "config": config}))
    replicas, port = manifest["spec"]["replicas"], free_port()
    procs = []
    for rank in range(replicas):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARINA_")}
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(replicas),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            CARINA_SPEC=str(spec),
            CARINA_JOB="pretrain-tiny",
            CARINA_NAMESPACE="e2e",
            CARINA_CHECKPOINT_URI=f"file://{tmp_path}/ckpt",
            CARINA_CHECKPOINT_INTERVAL="30",
            CARINA_TERMINATION_LOG=str(tmp_path / f"termination-{rank}"),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "carina.workloads"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * replicas, outputs[0][1][-2000:]
    log = [json.loads(x) for x in outputs[0][0].splitlines() if x.startswith("{")]
    evals = [e["loss"] for e in log if e["event"] == "eval"]
    steps = [e["loss"] for e in log if e["event"] == "step"]
    assert len(evals) == 2
    assert evals[1] < evals[0] < steps[0]
    assert outputs[1][0] == ""  # only rank 0 logs
    assert checkpoint.complete_steps(open_store(f"file://{tmp_path}/ckpt")) == [30, 60]
    # Rank 0's final word, where status takes the last step from; the other ranks say nothing.
    said = json.loads((tmp_path / "termination-0").read_text())
    assert said["progress"]["step"] == 60
    assert said["progress"]["totalSteps"] == 60
    assert said["checkpoint"]["step"] == 60
    assert not (tmp_path / "termination-1").exists()
