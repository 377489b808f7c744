"""The `vision` kind on a real kube-apiserver: accepted with the models' defaults, a bad one
refused with the field path."""

from __future__ import annotations

import json

import pytest
from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.testcluster import TestCluster

pytestmark = pytest.mark.k8s


def create(cluster: TestCluster, namespace: str, manifest: dict, *, check: bool = True):
    return cluster.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(manifest), check=check
    )


def test_api_server_accepts_a_vision_job_with_the_models_defaults(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    job = make_job("deit-lt").with_vision(data={"imbalanceRatio": 50})
    stored = json.loads(create(k8s_cluster, namespace, job).stdout)
    server = stored["spec"]["workload"]["vision"]
    local = TrainingJob.parse(job).to_wire()["spec"]["workload"]["vision"]
    assert server == local  # every nested default applied on both sides alike
    assert server["data"]["imbalanceRatio"] == 50
    assert server["distill"] == {
        "enabled": True,
        "oodAugmentation": True,
        "drw": True,
        "drwStart": 0.75,
        "drwBeta": 0.9999,
    }


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        (
            {"data": {"imbalanceRatio": 0.5}},
            "spec.workload.vision.data.imbalanceRatio",
            "greater than or equal to 1",
        ),
        (
            {"teacher": {"epochs": 0}},
            "spec.workload.vision.teacher.epochs",
            "teacher.epochs must be at least 1 when distill.enabled is true",
        ),
        (
            {"data": {"source": "image-folder"}},
            "spec.workload.vision.data",
            "path is required when source is image-folder",
        ),
        ({"model": {"preset": "huge"}}, "spec.workload.vision.model.preset", "tiny"),
    ],
)
def test_api_server_refuses_a_bad_vision_job_with_the_field_path(
    k8s_cluster: TestCluster, namespace: str, fields: dict, path: str, words: str
) -> None:
    result = create(
        k8s_cluster, namespace, make_job("bad-vision").with_vision(**fields), check=False
    )
    assert result.returncode != 0, "accepted"
    assert path in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_api_server_refuses_vision_beside_another_workload(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    job = make_job("two-kinds").with_workload("vision", {"model": {"preset": "tiny"}})
    result = create(k8s_cluster, namespace, job, check=False)
    assert result.returncode != 0
    # the schema's maxProperties answers before the CEL rule that names the members
    assert "spec.workload: Too many: 2: must have at most 1 item" in result.stderr
