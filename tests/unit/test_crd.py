"""The committed CRDs are what the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from carina.platform.api import crd
from carina.workloads.contract import CONTRACT_ENV, SPEC_DIR

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "helm" / "carina" / "crds"
COMMITTED = CRDS / crd.CRD_FILENAME


def test_committed_crds_match_the_models() -> None:
    for kind in crd.KINDS:
        committed = (CRDS / kind.filename).read_text()
        assert committed == crd.crd_yaml(kind), f"{kind.filename}: run `make crds` and commit it"
    # One file per kind, and nothing stale beside them.
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crd.CRD_FILENAMES)


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: crd.CrdKind) -> None:
    schema = crd.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
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
    assert columns == [
        "Phase", "Workload", "Ready", "Workers", "Step", "Loss", "Stage", "Restarts", "Queue",
        "Reason", "Admitted", "Age", "Message",
    ]  # fmt: skip
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert paths["Queue"] == ".spec.queue"
    assert paths["Stage"] == ".status.progress.stage"
    assert paths["Reason"] == ".status.queueing.reason"
    # Why a job has no workers (WaitingForQuota, WaitingForUpstream ...), and with -o wide how.
    assert paths["Admitted"] == '.status.conditions[?(@.type=="Admitted")].reason'
    assert paths["Message"] == '.status.conditions[?(@.type=="Admitted")].message'


def _crd_file(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CRDS / f"{name}.carina.dev.yaml").read_text())
    return doc


def test_queue_kinds_scopes_subresources_and_printer_columns() -> None:
    seen = {}
    for plural in ("clusterqueues", "localqueues", "trainingpriorityclasses"):
        doc = _crd_file(plural)
        version = doc["spec"]["versions"][0]
        seen[doc["spec"]["names"]["kind"]] = (
            doc["spec"]["scope"],
            "status" in version.get("subresources", {}),
            [c["name"] for c in version["additionalPrinterColumns"]],
        )
    assert seen == {
        "ClusterQueue": (
            "Cluster",
            True,
            ["Cohort", "Strategy", "GPUs reserved", "Admitted", "Pending", "Age"],
        ),
        "LocalQueue": ("Namespaced", True, ["ClusterQueue", "Pending", "Admitted"]),
        "TrainingPriorityClass": ("Cluster", False, ["Value", "Description"]),
    }
    columns = _crd_file("clusterqueues")["spec"]["versions"][0]["additionalPrinterColumns"]
    gpus = next(c for c in columns if c["name"] == "GPUs reserved")
    assert gpus["jsonPath"] == '.status.resources[?(@.name=="nvidia.com/gpu")].reserved'


def test_cluster_queue_rules_reach_the_schema() -> None:
    schema = _crd_file("clusterqueues")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    resources = schema["properties"]["spec"]["properties"]["resources"]
    # One quota per resource: the API server refuses a duplicate name (Duplicate value).
    assert resources["x-kubernetes-list-type"] == "map"
    assert resources["x-kubernetes-list-map-keys"] == ["name"]
    item = resources["items"]
    assert "nvidia.com/gpu" in item["properties"]["name"]["enum"]
    [rule] = item["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".lendingLimit"
    assert "quantity(" in rule["rule"]
    assert item["properties"]["nominalQuota"]["x-kubernetes-int-or-string"] is True
    assert item["properties"]["nominalQuota"]["minimum"] == 0
    priority = _crd_file("trainingpriorityclasses")["spec"]["versions"][0]["schema"]
    assert priority["openAPIV3Schema"]["required"] == ["value"]


def test_defaults_and_bounds_reach_the_schema() -> None:
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["minimum"] == 1
    assert spec["properties"]["cluster"]["enum"] == ["vela", "blue-vela", "none"]
    assert spec["properties"]["failurePolicy"]["properties"]["maxRestarts"]["default"] == 3
    cpu = spec["properties"]["resources"]["properties"]["cpu"]
    assert cpu.get("x-kubernetes-int-or-string") is True


def _template_schema() -> dict[str, Any]:
    spec = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["template"]


def test_template_reserved_names_are_cel_rules_that_name_the_field() -> None:
    pod = _template_schema()["properties"]["spec"]["properties"]
    env_rule = pod["env"]["items"]["x-kubernetes-validations"][0]
    assert env_rule["fieldPath"] == ".name"
    assert all(f"'{name}'" in env_rule["rule"] for name in CONTRACT_ENV)
    assert pod["volumes"]["items"]["x-kubernetes-validations"][0]["fieldPath"] == ".name"
    mount_rule = pod["volumeMounts"]["items"]["x-kubernetes-validations"][0]
    assert mount_rule["fieldPath"] == ".mountPath"
    assert f"'{SPEC_DIR}'" in mount_rule["rule"]
    labels = _template_schema()["properties"]["metadata"]["x-kubernetes-validations"][0]
    assert labels["fieldPath"] == ".labels"
    assert "'carina.dev/'" in labels["rule"]


def test_template_lists_of_named_things_are_kubernetes_list_maps() -> None:
    pod = _template_schema()["properties"]["spec"]["properties"]
    for field, key in (("env", "name"), ("volumes", "name"), ("volumeMounts", "mountPath")):
        assert pod[field]["x-kubernetes-list-type"] == "map"
        assert pod[field]["x-kubernetes-list-map-keys"] == [key]


def test_kubernetes_objects_in_the_template_pass_through() -> None:
    pod = _template_schema()["properties"]["spec"]["properties"]
    assert pod["volumes"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    assert pod["env"]["items"]["properties"]["valueFrom"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": pod["env"]["items"]["properties"]["valueFrom"]["description"],
    }
    assert pod["affinity"]["properties"]["nodeAffinity"]["x-kubernetes-preserve-unknown-fields"]


def test_template_sizes_are_bounded_so_cel_costs_are_too() -> None:
    for path, node in _walk(_template_schema()):
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            continue  # a Kubernetes object passed through: no rule reads inside it
        kind = node.get("type")
        if kind == "array":
            assert "maxItems" in node, path
        elif kind == "string":
            assert "maxLength" in node or "enum" in node, path
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
