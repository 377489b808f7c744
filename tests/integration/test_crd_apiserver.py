"""The generated CRD on a real kube-apiserver: examples apply, bad manifests are refused with
the field path, and the server's defaults agree with the models'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from builders import BAD_MANIFESTS, make_job

from carina.platform.api import TrainingJob
from carina.platform.testcluster import TestCluster

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def create(cluster: TestCluster, namespace: str, manifest: dict, *, check: bool = True):
    doc = json.loads(json.dumps(manifest))
    return cluster.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(doc), check=check
    )


def test_crd_is_established_with_its_short_name(k8s_cluster: TestCluster) -> None:
    crd = k8s_cluster.get_json("crd", "trainingjobs.carina.dev")
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established.get("Established") == "True"
    assert established.get("NonStructuralSchema") is None
    assert crd["status"]["acceptedNames"]["shortNames"] == ["tj"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_applies(k8s_cluster: TestCluster, namespace: str, example: Path) -> None:
    k8s_cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    for document in yaml.safe_load_all(example.read_text()):
        if document is None:
            continue
        stored = k8s_cluster.get_json("tj", "-n", namespace, document["metadata"]["name"])
        assert stored["spec"]["workload"]


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_api_server_refuses_bad_manifest_with_field_path(
    k8s_cluster: TestCluster, namespace: str, case: str
) -> None:
    manifest, path = BAD_MANIFESTS[case]
    result = create(k8s_cluster, namespace, manifest, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert path in result.stderr, result.stderr


def test_server_defaults_match_the_models(k8s_cluster: TestCluster, namespace: str) -> None:
    stored = json.loads(create(k8s_cluster, namespace, make_job("defaults")).stdout)
    local = TrainingJob.parse(make_job("defaults")).to_wire()
    for key in ("replicas", "cluster", "checkpoint", "failurePolicy", "suspend", "priority"):
        assert stored["spec"][key] == local["spec"][key], key
    server_pretrain = stored["spec"]["workload"]["pretrain"]
    local_pretrain = local["spec"]["workload"]["pretrain"]
    assert server_pretrain == local_pretrain
