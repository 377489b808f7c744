"""Staged pretraining manifests on a real kube-apiserver: the CEL rules refuse bad stages with
the field and the rule, a good staged job is stored, and `kubectl get tj` prints its Stage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from builders import make_job

from carina.testcluster import TestCluster

pytestmark = pytest.mark.k8s

SOURCES = {"code": {"source": "python-stdlib", "packing": "repository"}}


def create(cluster: TestCluster, namespace: str, manifest: dict, *, check: bool = True):  # type: ignore[no-untyped-def]
    return cluster.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(manifest), check=check
    )


def staged(name: str, **pretrain: Any) -> dict[str, Any]:
    job = make_job(name).with_pretrain(steps=40, **pretrain)
    return json.loads(json.dumps(job))


@pytest.mark.parametrize(
    ("pretrain", "words"),
    [
        (
            {"sources": SOURCES, "stages": [{"name": "a", "steps": 40, "mixture": {"web": 1}}]},
            "stages[].mixture may only name sources defined in sources",
        ),
        (
            {"stages": [{"name": "a", "steps": 20}, {"name": "a", "steps": 20}]},
            "stages[].name must be unique",
        ),
        (
            {"model": {"maxSeqLen": 256}, "stages": [{"name": "a", "steps": 40, "seqLen": 512}]},
            "stages[].seqLen must not exceed model.maxSeqLen",
        ),
        (
            {"stages": [{"name": "a", "steps": 40, "tokens": 4096}]},
            "set exactly one of steps and tokens",
        ),
        (
            {"sources": SOURCES, "stages": [{"name": "a", "steps": 40, "mixture": {"code": 0}}]},
            "spec.workload.pretrain.stages[0].mixture.code",
        ),
        ({"sources": SOURCES}, "sources are named by stages[].mixture: set stages too"),
        (
            {"data": {"source": "synthetic", "packing": "repository"}},
            "packing repository needs source python-stdlib or files",
        ),
    ],
)
def test_api_server_refuses_bad_stages_naming_the_rule(
    k8s_cluster: TestCluster, namespace: str, pretrain: dict[str, Any], words: str
) -> None:
    result = create(k8s_cluster, namespace, staged("bad-stages", **pretrain), check=False)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr


def test_a_staged_job_is_stored_and_shows_its_stage_column(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    job = staged(
        "staged",
        model={"maxSeqLen": 512},
        sources={**SOURCES, "keys": {"source": "passkey"}},
        stages=[
            {"name": "short", "steps": 20, "seqLen": 128, "mixture": {"code": 1}},
            {"name": "long", "steps": 20, "seqLen": 512, "ropeTheta": 5e4, "mixture": {"keys": 1}},
        ],
    )
    stored = json.loads(create(k8s_cluster, namespace, job).stdout)
    assert [s["name"] for s in stored["spec"]["workload"]["pretrain"]["stages"]] == [
        "short",
        "long",
    ]
    header = k8s_cluster.kubectl("get", "tj", "-n", namespace, "staged").stdout.splitlines()[0]
    assert "STAGE" in header.split()
