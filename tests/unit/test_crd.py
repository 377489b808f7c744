"""The committed CRD is what the models generate, and it is structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from carina.platform import crd

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "helm" / "carina" / "crds" / crd.CRD_FILENAME


def test_committed_crd_matches_the_models() -> None:
    assert COMMITTED.read_text() == crd.crd_yaml(), "run `make crds` and commit the result"


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_schema_is_structural() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "prefixItems", "const", "title", "$defs"}
    for path, node in _walk(schema):
        if "properties" in path.split(".")[-1:]:
            continue  # property names are data, not keywords
        assert not (forbidden & set(node)), f"{path} uses {forbidden & set(node)}"
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, path


def test_union_and_cross_field_rules_are_cel_validations() -> None:
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    workload_rules = spec["properties"]["workload"]["x-kubernetes-validations"]
    assert any("size() == 1" in r["rule"] for r in workload_rules)
    pretrain = spec["properties"]["workload"]["properties"]["pretrain"]
    assert any("microBatchSize" in r["rule"] for r in pretrain["x-kubernetes-validations"])


def test_crd_names_status_and_printer_columns() -> None:
    doc = yaml.safe_load(COMMITTED.read_text())
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TrainingJob",
        "trainingjobs",
        ["tj"],
    )
    assert doc["spec"]["scope"] == "Namespaced"
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Workload", "Ready", "Workers", "Step", "Loss", "Restarts", "Age"]


def test_defaults_and_bounds_reach_the_schema() -> None:
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["minimum"] == 1
    assert spec["properties"]["cluster"]["enum"] == ["vela", "blue-vela", "none"]
    assert spec["properties"]["failurePolicy"]["properties"]["maxRestarts"]["default"] == 3
    cpu = spec["properties"]["resources"]["properties"]["cpu"]
    assert cpu.get("x-kubernetes-int-or-string") is True
