"""The generated CRD on a real kube-apiserver: examples apply, bad manifests are refused with
the field path, and the server's defaults agree with the models'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from builders import BAD_MANIFESTS, FIXED_FIELDS_JOB, SPEC_CHANGES, make_job

from carina.platform.api.manifests import ManifestError, parse_manifest
from carina.platform.api.spec_changes import SPEC_CHANGE_RULES
from carina.platform.api.types import TrainingJob
from carina.testcluster import TestCluster

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


# Templates that set what Carina owns: the field path the API server names, and the rule
# `carina validate` refuses the same template with (None: a rule of Kubernetes' own).
BAD_TEMPLATES: dict[str, tuple[dict, str, bool]] = {
    "env-sets-rank": (
        {"spec": {"env": [{"name": "RANK", "value": "3"}]}},
        "spec.template.spec.env[0].name",
        True,
    ),
    "env-sets-master-addr": (
        {"spec": {"env": [{"name": "A", "value": "1"}, {"name": "MASTER_ADDR", "value": "x"}]}},
        "spec.template.spec.env[1].name",
        True,
    ),
    "env-twice": (
        {"spec": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.template.spec.env[1]",
        False,
    ),
    "env-from-prefix-begins-a-contract-name": (
        {"spec": {"envFrom": [{"prefix": "CARINA_", "secretRef": {"name": "s"}}]}},
        "spec.template.spec.envFrom[0].prefix",
        True,
    ),
    "volume-named-dshm": (
        {"spec": {"volumes": [{"name": "dshm", "emptyDir": {}}]}},
        "spec.template.spec.volumes[0].name",
        True,
    ),
    "mount-over-the-spec": (
        {
            "spec": {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/etc/carina"}],
            }
        },
        "spec.template.spec.volumeMounts[0].mountPath",
        True,
    ),
    "mount-under-the-pvc-root": (
        {
            "spec": {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/mnt/pvc/ckpts"}],
            }
        },
        "spec.template.spec.volumeMounts[0].mountPath",
        True,
    ),
    "mount-of-no-volume": (
        {"spec": {"volumeMounts": [{"name": "missing", "mountPath": "/data"}]}},
        "spec.template.spec.volumeMounts",
        True,
    ),
    "carina-label": (
        {"metadata": {"labels": {"carina.dev/job": "other"}}},
        "spec.template.metadata.labels",
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TEMPLATES))
def test_api_server_refuses_template_that_sets_what_carina_owns(
    k8s_cluster: TestCluster, namespace: str, case: str
) -> None:
    template, path, same_rule = BAD_TEMPLATES[case]
    manifest = make_job().with_spec(template=template)
    result = create(k8s_cluster, namespace, manifest, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert path in result.stderr, result.stderr
    if same_rule:
        with pytest.raises(ManifestError) as local:
            parse_manifest(manifest)
        assert any(e.rule in result.stderr for e in local.value.errors), result.stderr


def test_api_server_keeps_template_kubernetes_objects_as_written(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    template = {
        "metadata": {"labels": {"team": "research"}},
        "spec": {
            "env": [
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}
            ],
            "envFrom": [{"secretRef": {"name": "s3-credentials"}}],
            "volumes": [
                {"name": "corpus", "persistentVolumeClaim": {"claimName": "corpus"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            ],
            "volumeMounts": [{"name": "corpus", "mountPath": "/data", "readOnly": True}],
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}},
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "podAffinityTerm": {"topologyKey": "zone"}}
                    ]
                },
            },
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        },
    }
    stored = json.loads(
        create(k8s_cluster, namespace, make_job().with_spec(template=template)).stdout
    )
    assert stored["spec"]["template"] == template
    assert TrainingJob.parse(stored).to_wire()["spec"]["template"] == template


# Quantities at the edges of Kubernetes' grammar: the API server and the models must agree.
QUANTITIES: list[int | str] = [
    1, 0, -1, "1", "+1", "0", "0.0", "-1Gi", "", "abc", "500m", ".5", "1.", "1e3", "1E", "1Ei",
    "1e-3", "100n", "16Gi", "1Gb", "1e", "1K", "0.5Mi",
]  # fmt: skip


def test_api_server_and_models_agree_on_every_quantity(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    disagree = []
    for i, value in enumerate(QUANTITIES):
        manifest = make_job(f"q{i}").with_spec(resources={"cpu": value, "memory": value})
        try:
            parse_manifest(manifest)
            local = True
        except ManifestError:
            local = False
        result = create(k8s_cluster, namespace, manifest, check=False)
        server = result.returncode == 0
        if local != server:
            disagree.append((value, local, result.stderr))
        if not server:
            assert "spec.resources.cpu" in result.stderr, result.stderr
    assert not disagree


# -- changing a created job's spec (platform/api/spec_changes.py) ---------------------------


def patch_spec(cluster: TestCluster, namespace: str, name: str, spec: dict):
    return cluster.kubectl(
        "patch", "tj", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}),
        check=False,
    )  # fmt: skip


def test_every_spec_change_rule_has_a_change_to_try() -> None:
    assert {r.field for r in SPEC_CHANGE_RULES} == {path for _, path, _ in SPEC_CHANGES.values()}


@pytest.mark.parametrize("case", sorted(SPEC_CHANGES))
def test_api_server_refuses_changing_a_fixed_field_of_a_job_that_may_run(
    k8s_cluster: TestCluster, namespace: str, case: str
) -> None:
    change, path, _ = SPEC_CHANGES[case]
    created = json.loads(create(k8s_cluster, namespace, FIXED_FIELDS_JOB).stdout)
    result = patch_spec(k8s_cluster, namespace, "fixed", change)
    assert result.returncode != 0, f"{case} was accepted"
    assert path in result.stderr, result.stderr
    rule = next(r for r in SPEC_CHANGE_RULES if r.field == path)
    assert rule.message in result.stderr, result.stderr
    stored = k8s_cluster.get_json("tj", "-n", namespace, "fixed")
    assert stored["spec"] == created["spec"]


@pytest.mark.parametrize("case", sorted(SPEC_CHANGES))
def test_a_suspended_job_takes_placement_changes_but_keeps_its_training(
    k8s_cluster: TestCluster, namespace: str, case: str
) -> None:
    change, path, while_suspended = SPEC_CHANGES[case]
    create(k8s_cluster, namespace, FIXED_FIELDS_JOB.with_spec(suspend=True))
    result = patch_spec(k8s_cluster, namespace, "fixed", change)
    assert (result.returncode == 0) == while_suspended, result.stderr
    if not while_suspended:
        assert path in result.stderr, result.stderr
        return
    stored = k8s_cluster.get_json("tj", "-n", namespace, "fixed")
    assert holds(stored["spec"], change), stored["spec"]


def holds(stored: object, change: object) -> bool:
    """Whether every value `change` sets is in `stored` (which may add defaults)."""
    if isinstance(change, dict):
        return isinstance(stored, dict) and all(holds(stored.get(k), v) for k, v in change.items())
    return stored == change


def test_replicas_cannot_change_in_the_update_that_suspends_or_resumes(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    create(k8s_cluster, namespace, make_job("run"))
    result = patch_spec(k8s_cluster, namespace, "run", {"suspend": True, "replicas": 3})
    assert result.returncode != 0, "suspended and resized at once"
    assert "spec.replicas" in result.stderr, result.stderr
    assert patch_spec(k8s_cluster, namespace, "run", {"suspend": True}).returncode == 0
    assert patch_spec(k8s_cluster, namespace, "run", {"replicas": 3}).returncode == 0
    result = patch_spec(k8s_cluster, namespace, "run", {"suspend": False, "replicas": 4})
    assert result.returncode != 0, "resumed and resized at once"
    assert patch_spec(k8s_cluster, namespace, "run", {"suspend": False}).returncode == 0
    assert k8s_cluster.get_json("tj", "-n", namespace, "run")["spec"]["replicas"] == 3


def test_policies_change_on_a_job_that_may_run(k8s_cluster: TestCluster, namespace: str) -> None:
    create(k8s_cluster, namespace, make_job("run"))
    policies = {
        "ttlSecondsAfterFinished": 5,
        "activeDeadlineSeconds": 60,
        "priority": 10,
        "failurePolicy": {"maxRestarts": 7},
    }
    result = patch_spec(k8s_cluster, namespace, "run", policies)
    assert result.returncode == 0, result.stderr
    stored = k8s_cluster.get_json("tj", "-n", namespace, "run")["spec"]
    assert stored["ttlSecondsAfterFinished"] == 5
    assert stored["activeDeadlineSeconds"] == 60
    assert stored["priority"] == 10
    assert stored["failurePolicy"]["maxRestarts"] == 7
