"""`python -m carina.workloads.health_probe` as the health agent starts it: one JSON line.

On a machine without a GPU the probe says it is unsupported, and why; where torch sees GPUs it
measures them (the `cuda` marker: `pytest -m cuda` on a GPU machine).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def probe(name: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "carina.workloads.health_probe", name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    report = json.loads(line)
    assert report["probe"] == name
    return report


def _cuda_gpus() -> int:
    torch = pytest.importorskip("torch")
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("name", ["bandwidth", "allreduce"])
def test_without_a_gpu_the_probe_reports_unsupported_with_its_reason(name: str) -> None:
    if _cuda_gpus():
        pytest.skip("this machine has a GPU: the cuda twin measures it")
    report = probe(name)
    assert report["supported"] is False
    assert "CUDA is not available" in str(report["reason"])


@pytest.mark.cuda
def test_on_a_gpu_the_bandwidth_probe_measures_every_gpu() -> None:
    gpus = _cuda_gpus()
    if not gpus:
        pytest.skip("cuda: torch.cuda.is_available() is False on this machine")
    report = probe("bandwidth")
    assert report["supported"] is True
    assert "error" not in report
    values = report["values"]
    assert isinstance(values, dict)
    assert values["min_gbps"] > 0
    assert {f"gpu{i}_gbps" for i in range(gpus)} <= set(values)


@pytest.mark.cuda
def test_on_several_gpus_the_allreduce_probe_sums_correctly_and_measures() -> None:
    gpus = _cuda_gpus()
    if gpus < 2:
        pytest.skip("cuda: the all-reduce probe needs two GPUs")
    report = probe("allreduce")
    assert report["supported"] is True
    assert "error" not in report
    assert report["values"]["busbw_gbps"] > 0  # type: ignore[index]
