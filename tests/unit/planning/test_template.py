"""The worker pod template and pvc:// claims, merged into the rendered worker pod."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from builders import make_job

from carina.platform.api.types import (
    RESERVED_ENV,
    RESERVED_MOUNT_DIRS,
    RESERVED_VOLUME_PREFIX,
    RESERVED_VOLUMES,
    TrainingJob,
)
from carina.platform.planning import profiles
from carina.platform.planning.render import SPEC_ANNOTATION, RenderSettings, build_worker_pod
from carina.platform.planning.template import apply_template, pvc_volume_name
from carina.workloads.contract import PVC_MOUNT_ROOT_ENV
from carina.workloads.runtime.storage import LocalStore, open_store

SETTINGS = RenderSettings(image="carina:test")
GANG_TERM = "preferredDuringSchedulingIgnoredDuringExecution"


def job(template: dict[str, Any] | None = None, **spec: Any) -> TrainingJob:
    manifest = make_job("llm").with_spec(**spec)
    if template is not None:
        manifest = manifest.with_spec(template=template)
    manifest["metadata"].update(namespace="team-a", uid="uid-1")
    return TrainingJob.parse(manifest)


def gpu_job(profile: str, template: dict[str, Any] | None = None, **spec: Any) -> TrainingJob:
    return job(template, cluster=profile, resources={"gpus": 8}, **spec)


def pod_of(training_job: TrainingJob, settings: RenderSettings = SETTINGS) -> dict[str, Any]:
    return build_worker_pod(training_job, 0, 0, settings)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def env_names(pod: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container(pod)["env"]]


def env_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(pod)["env"]}


def mounts_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container(pod)["volumeMounts"]}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


# -- the template ---------------------------------------------------------------------------


def test_template_env_follows_the_contract_and_overrides_the_profile_nccl_settings():
    bare = pod_of(gpu_job("vela"))
    env = [
        {"name": "NCCL_IB_HCA", "value": "mlx5_2"},
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    pod = pod_of(gpu_job("vela", {"spec": {"env": env}}))
    names = env_names(pod)
    # Same-named profile values are replaced in place; the others follow the contract's, so
    # a value can refer to them as $(CARINA_JOB).
    assert names == [*env_names(bare), "NCCL_DEBUG", "POD_IP"]
    assert env_of(pod)["NCCL_IB_HCA"] == {"name": "NCCL_IB_HCA", "value": "mlx5_2"}
    assert env_of(pod)["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env_of(pod)["CARINA_JOB"] == env_of(bare)["CARINA_JOB"]


def test_env_from_hands_the_secret_to_the_worker_container():
    template = {"spec": {"envFrom": [{"secretRef": {"name": "s3-credentials"}}]}}
    assert container(pod_of(job(template)))["envFrom"] == [
        {"secretRef": {"name": "s3-credentials"}}
    ]
    assert "envFrom" not in container(pod_of(job()))


def test_user_volumes_and_mounts_follow_the_platform_ones():
    template = {
        "spec": {
            "volumes": [{"name": "corpus", "persistentVolumeClaim": {"claimName": "corpus"}}],
            "volumeMounts": [{"name": "corpus", "mountPath": "/data", "readOnly": True}],
        }
    }
    pod = pod_of(job(template))
    assert pod["spec"]["volumes"][-1] == {
        "name": "corpus",
        "persistentVolumeClaim": {"claimName": "corpus"},
    }
    assert container(pod)["volumeMounts"][-1] == {
        "name": "corpus",
        "mountPath": "/data",
        "readOnly": True,
    }
    assert {"spec", "dshm"} <= set(volumes_of(pod))


def test_node_selector_adds_to_the_profile_pool_and_wins_on_the_same_key():
    selector = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    pod = pod_of(gpu_job("vela", {"spec": {"nodeSelector": selector}}))
    assert pod["spec"]["nodeSelector"] == {profiles.POOL_LABEL: "vela"} | selector
    renamed = pod_of(gpu_job("vela", {"spec": {"nodeSelector": {profiles.POOL_LABEL: "a100"}}}))
    assert renamed["spec"]["nodeSelector"] == {profiles.POOL_LABEL: "a100"}


def test_tolerations_join_the_profile_ones():
    extra = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    bare = pod_of(gpu_job("vela"))["spec"]["tolerations"]
    tolerations = pod_of(gpu_job("vela", {"spec": {"tolerations": [extra]}}))["spec"]["tolerations"]
    assert tolerations == [*bare, extra]
    assert profiles.GPU_TOLERATION in tolerations


def test_the_users_affinity_is_kept_and_the_platforms_node_rules_hold_in_each_term():
    zone_term = {
        "weight": 10,
        "podAffinityTerm": {"labelSelector": {}, "topologyKey": "topology.kubernetes.io/zone"},
    }
    rack = {"key": "rack", "operator": "In", "values": ["r1"]}
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [rack]}]
        }
    }
    anti = {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "host"}]}
    affinity = {
        "nodeAffinity": node_affinity,
        "podAffinity": {GANG_TERM: [zone_term]},
        "podAntiAffinity": anti,
    }
    required = "requiredDuringSchedulingIgnoredDuringExecution"
    bare = pod_of(gpu_job("blue-vela"))["spec"]["affinity"]["nodeAffinity"]
    [platform] = bare[required]["nodeSelectorTerms"]
    merged = pod_of(gpu_job("blue-vela", {"spec": {"affinity": affinity}}))["spec"]["affinity"]
    assert merged["podAffinity"] == {GANG_TERM: [zone_term]}
    assert merged["podAntiAffinity"] == anti
    [term] = merged["nodeAffinity"][required]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [rack, *platform["matchExpressions"]]


def test_labels_and_annotations_reach_the_pod_beside_the_platform_ones():
    template = {
        "metadata": {
            "labels": {"team": "research"},
            "annotations": {"k8s.v1.cni.cncf.io/networks": "roce-vf", "owner": "me"},
        }
    }
    meta = pod_of(gpu_job("vela", template))["metadata"]
    assert meta["labels"]["team"] == "research"
    assert meta["labels"]["carina.dev/job"] == "llm"
    # The cluster knows its network attachment's name better than the profile does.
    user = {k: v for k, v in meta["annotations"].items() if k != SPEC_ANNOTATION}
    assert user == {"k8s.v1.cni.cncf.io/networks": "roce-vf", "owner": "me"}


def test_service_account_pull_policy_pull_secrets_and_priority_class():
    settings = RenderSettings(service_account="carina-worker", image_pull_secrets=("regcred",))
    template = {
        "spec": {
            "serviceAccountName": "trainer",
            "imagePullPolicy": "Always",
            "imagePullSecrets": [{"name": "team-registry"}, {"name": "regcred"}],
            "priorityClassName": "research-high",
        }
    }
    pod = pod_of(job(template), settings)
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert container(pod)["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "team-registry"}]
    assert pod["spec"]["priorityClassName"] == "research-high"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_apply_template_leaves_its_input_alone():
    template = {"spec": {"env": [{"name": "A", "value": "1"}], "nodeSelector": {"a": "b"}}}
    training_job = job(template, checkpoint={"uri": "pvc://ckpts/run"})
    bare = pod_of(job())
    before = copy.deepcopy(bare)
    apply_template(bare, training_job, "pvc://ckpts/run")
    assert bare == before


# -- pvc:// claims --------------------------------------------------------------------------


@pytest.fixture
def default_pvc_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PVC_MOUNT_ROOT_ENV, raising=False)


@pytest.mark.usefixtures("default_pvc_root")
def test_pvc_checkpoint_uri_is_mounted_where_the_worker_storage_looks() -> None:
    pod = pod_of(job(checkpoint={"uri": "pvc://ckpts/llm/run1"}))
    name = pvc_volume_name("ckpts")
    assert volumes_of(pod)[name] == {"name": name, "persistentVolumeClaim": {"claimName": "ckpts"}}
    mount = mounts_of(pod)[name]
    assert "readOnly" not in mount  # workers write their checkpoints there
    store = open_store("pvc://ckpts/llm/run1")
    assert isinstance(store, LocalStore)
    assert store.root == Path(mount["mountPath"]) / "llm" / "run1"
    assert env_of(pod)[PVC_MOUNT_ROOT_ENV]["value"] == str(Path(mount["mountPath"]).parent)


def test_default_checkpoint_root_on_a_claim_is_mounted_too():
    pod = pod_of(job(), RenderSettings(checkpoint_root="pvc://shared/checkpoints"))
    assert pvc_volume_name("shared") in volumes_of(pod)


def test_each_claim_is_one_volume_and_input_only_claims_are_read_only():
    workload = {
        "evaluate": {
            "base": "pvc://models/ft/step-00000120",
            "compareTo": "pvc://models/base/step-00000600",
            "tasks": [{"name": "ppl", "kind": "perplexity", "data": {"generator": "code-choice"}}],
        }
    }
    pod = pod_of(job(workload=workload, checkpoint={"uri": "s3://bucket/eval"}))
    claims = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert [v["persistentVolumeClaim"]["claimName"] for v in claims] == ["models"]
    assert mounts_of(pod)[pvc_volume_name("models")]["readOnly"] is True

    finetune = {"finetune": {"base": "pvc://models/base/step-00000600"}}
    pod = pod_of(job(workload=finetune, checkpoint={"uri": "pvc://models/ft"}))
    assert "readOnly" not in mounts_of(pod)[pvc_volume_name("models")]
    assert len([v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]) == 1


def test_jobs_without_claims_or_template_get_the_pod_as_rendered():
    training_job = job(checkpoint={"uri": "s3://bucket/run"})
    pod = pod_of(training_job)
    assert apply_template(pod, training_job, "s3://bucket/run") == pod
    assert PVC_MOUNT_ROOT_ENV not in env_names(pod)
    assert not [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]


def test_long_claim_names_still_make_valid_volume_names():
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    names = {pvc_volume_name(long_a), pvc_volume_name(long_b)}
    assert len(names) == 2
    assert all(len(n) <= 63 and n[-1].isalnum() for n in names)
    assert pvc_volume_name("ckpts") == "carina-pvc-ckpts"


# -- the reserved names are the renderer's own ----------------------------------------------


@pytest.mark.parametrize("profile", ["vela", "blue-vela", "none"])
def test_every_name_the_renderer_owns_is_reserved_for_templates(profile):
    gpus = 0 if profile == "none" else 8
    pod = pod_of(
        job(cluster=profile, resources={"gpus": gpus}, checkpoint={"uri": "pvc://ckpts/run"})
    )
    profile_env = set(profiles.profile_for(profile).env)
    assert set(env_names(pod)) - profile_env <= set(RESERVED_ENV)
    for volume in pod["spec"]["volumes"]:
        name = volume["name"]
        assert name in RESERVED_VOLUMES or name.startswith(RESERVED_VOLUME_PREFIX), name
    paths = [m["mountPath"] for m in container(pod)["volumeMounts"]]
    paths.append(container(pod)["terminationMessagePath"])
    for path in paths:
        assert any(path == d or path.startswith(d + "/") for d in RESERVED_MOUNT_DIRS), path
