"""Fine-tuning under torchrun: two gloo ranks share one SSR dataset."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from finetune_fixtures import base_uri, finetune_spec

from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store


@pytest.mark.slow
def test_two_gloo_ranks_under_torchrun_share_one_dataset(tmp_path, base_uri):
    out = f"file://{tmp_path}/ddp"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CARINA_SPEC": finetune_spec(tmp_path, base_uri, "ssr"),
        "CARINA_CHECKPOINT_URI": out,
    }
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*torchrun, "-m", "carina.workloads"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    store = open_store(out)
    assert checkpoint.latest(store).step == 3
    assert len(store.get_bytes("ssr-dataset.jsonl").splitlines()) == 12


__all__ = ["base_uri"]  # the fixture the test uses
