"""The `device` fixture: a test that takes it runs once per device kind.

`cpu` runs everywhere; `cuda` carries the `cuda` marker and is skipped, with its reason, where
torch sees no GPU. A GPU machine runs just those with `pytest -m cuda` (bench/gpu_check.sh).
torch is imported only when such a test runs, so the rest of the unit tests do without it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

DEVICE_KINDS = ("cpu", "cuda")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cuda: the CUDA twin of a device-parametrized test (needs a GPU)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        params = [
            pytest.param(kind, marks=[pytest.mark.cuda] if kind == "cuda" else [], id=kind)
            for kind in DEVICE_KINDS
        ]
        metafunc.parametrize("device", params, indirect=True)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> Any:
    """The torch.device under test (cuda: the current GPU)."""
    import torch

    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("cuda: torch.cuda.is_available() is False on this machine")
    return torch.device(request.param, 0) if request.param == "cuda" else torch.device("cpu")


@pytest.fixture(autouse=True)
def _ieee_floats() -> Iterator[None]:
    """Every test starts and leaves with IEEE denormals (a training run may flush them)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)
