"""Kubernetes quantities: the grammar the API server uses, and the value the substrate counts."""

from __future__ import annotations

import pytest
from builders import make_job

from carina.platform.api.manifests import ManifestError, parse_manifest
from carina.platform.api.quantity import is_quantity, parse_quantity

# Every form Kubernetes' grammar has, and the value it stands for.
GOOD: list[tuple[int | str, float]] = [
    (2, 2.0),
    ("2", 2.0),
    ("+2", 2.0),
    ("500m", 0.5),
    ("1.5", 1.5),
    ("1.", 1.0),
    (".5", 0.5),
    ("3k", 3000.0),
    ("2M", 2e6),
    ("1G", 1e9),
    ("1T", 1e12),
    ("1P", 1e15),
    ("1E", 1e18),
    ("2Ki", 2048.0),
    ("2Mi", 2 * 2**20),
    ("2Gi", 2 * 2**30),
    ("1Ti", 2**40),
    ("1Pi", 2**50),
    ("1Ei", 2**60),
    ("250u", 250e-6),
    ("100n", 100e-9),
    ("1e3", 1000.0),
    ("1E3", 1000.0),
    ("1.5e-3", 0.0015),
    ("2e+2", 200.0),
    ("-1", -1.0),
    ("-1Gi", -(2**30)),
    ("0", 0.0),
]

# Not quantities at all: Kubernetes refuses each.
MALFORMED = ["", " ", "abc", "2 cpus", "Gi", "1Gb", "1K", "1KI", "1e", "1e1.5", "1..5", ".", "--1"]


@pytest.mark.parametrize(("text", "value"), GOOD)
def test_quantities_parse_as_kubernetes_reads_them(text: int | str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)
    if isinstance(text, str):
        assert is_quantity(text)


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_quantities_are_refused(text: str) -> None:
    assert not is_quantity(text)
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_extreme_quantities_are_clamped_as_kubernetes_clamps_them() -> None:
    assert parse_quantity("1e400") == float(2**63 - 1)
    assert parse_quantity("1e-400") == pytest.approx(1e-9)
    assert parse_quantity("-1e400") == -float(2**63 - 1)


@pytest.mark.parametrize(
    "value",
    [1, 4, "1", "500m", "0.5", ".5", "1.", "+2", "16Gi", "1e3", "1E", "100n", "0.001"],
)
def test_a_job_asks_for_any_positive_quantity(value: int | str) -> None:
    job = parse_manifest(make_job().with_spec(resources={"cpu": value, "memory": value}))
    assert parse_quantity(job.spec.resources.cpu) > 0
    assert parse_quantity(job.spec.resources.memory) > 0


@pytest.mark.parametrize(
    "value", [0, -1, True, 1.5, "0", "0.0", "0m", "-1Gi", "", "abc", "1Gb", "1e", "x" * 65]
)
def test_a_job_asking_for_nothing_or_not_a_quantity_is_refused(value: object) -> None:
    for field in ("cpu", "memory"):
        with pytest.raises(ManifestError) as info:
            parse_manifest(make_job().with_spec(resources={field: value}))
        [error] = info.value.errors
        assert error.path == f"spec.resources.{field}"
        assert "Kubernetes quantity greater than zero" in error.rule


@pytest.mark.parametrize("text", [t for t, _ in GOOD if isinstance(t, str)])
def test_the_substrate_counts_every_quantity_the_models_accept(text: str) -> None:
    try:
        parse_manifest(make_job().with_spec(resources={"cpu": text}))
    except ManifestError:
        return  # not a request (zero or negative)
    assert parse_quantity(text) > 0
