"""Rendering: the worker contract, cluster profiles and stable names, table by table."""

from __future__ import annotations

import json

import pytest
from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.planning import profiles
from carina.platform.planning.render import (
    SPEC_ANNOTATION,
    RenderSettings,
    build_service,
    build_worker_pod,
)
from carina.testcluster import pools
from carina.workloads.contract import WorkerContext

SETTINGS = RenderSettings(
    image="carina:test", shutdown_timeout_seconds=100, grace_margin_seconds=20
)


def job(**spec) -> TrainingJob:
    manifest = make_job("llm").with_spec(**spec)
    manifest["metadata"].update(namespace="team-a", uid="uid-1", generation=1)
    return TrainingJob.parse(manifest)


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_worker_env_is_the_torchrun_contract():
    pod = build_worker_pod(job(replicas=4), index=2, restart=3, settings=SETTINGS)
    env = env_of(pod)
    assert env | {} == env  # plain strings
    keys = ("GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_PORT")
    assert {k: env[k] for k in keys} == {
        "GROUP_RANK": "2",
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_PORT": "29500",
    }
    # The pod's entry process gives each of its ranks RANK and LOCAL_RANK.
    assert "RANK" not in env
    assert "LOCAL_RANK" not in env
    assert env["MASTER_ADDR"] == "llm-worker-0.llm.team-a.svc"
    assert env["CARINA_JOB"] == "llm"
    assert env["CARINA_NAMESPACE"] == "team-a"
    assert env["CARINA_SPEC"] == "/etc/carina/spec.json"
    assert env["CARINA_RESTART"] == "3"
    assert env["CARINA_CHECKPOINT_URI"] == "s3://carina-checkpoints/team-a/llm"
    assert env["CARINA_CHECKPOINT_INTERVAL"] == "100"
    assert env["CARINA_CHECKPOINT_KEEP"] == "3"
    assert env["CARINA_METRICS_PORT"] == "9400"


@pytest.mark.parametrize(
    ("resources", "local", "ranks"),
    [
        ({"gpus": 4}, 4, [4, 5, 6, 7]),
        ({"gpus": 8}, 8, list(range(8, 16))),
        ({"ranksPerWorker": 2}, 2, [2, 3]),
        ({}, 1, [1]),
    ],
)
def test_a_worker_runs_one_rank_per_gpu(resources: dict, local: int, ranks: list[int]):
    pod = build_worker_pod(job(replicas=2, resources=resources), 1, 0, SETTINGS)
    ctx = WorkerContext.from_env(env_of(pod))
    assert ctx.local_world_size == local
    assert ctx.world_size == 2 * local
    assert [ctx.for_rank(i).rank for i in range(local)] == ranks


def test_ranks_per_worker_must_match_the_gpus():
    with pytest.raises(ValueError, match="ranksPerWorker must equal gpus"):
        job(resources={"gpus": 8, "ranksPerWorker": 2})


def test_worker_pod_has_stable_name_labels_and_owner():
    pod = build_worker_pod(job(replicas=2), index=1, restart=0, settings=SETTINGS)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "llm-worker-1-r0"
    assert meta["namespace"] == "team-a"
    assert meta["labels"]["carina.dev/job"] == "llm"
    assert meta["labels"]["carina.dev/index"] == "1"
    assert meta["labels"]["carina.dev/restart"] == "0"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": "llm",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["restartPolicy"] == "Never"
    assert (spec["hostname"], spec["subdomain"]) == ("llm-worker-1", "llm")
    assert spec["terminationGracePeriodSeconds"] == 120  # save budget + margin
    assert spec["automountServiceAccountToken"] is False
    container = spec["containers"][0]
    assert container["command"] == ["python", "-m", "carina.workloads.supervisor"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["image"] == "carina:test"


def test_explicit_checkpoint_uri_and_image_win():
    pod = build_worker_pod(
        job(checkpoint={"uri": "s3://mine/run1"}, image="me/img:1"), 0, 0, SETTINGS
    )
    assert env_of(pod)["CARINA_CHECKPOINT_URI"] == "s3://mine/run1"
    assert pod["spec"]["containers"][0]["image"] == "me/img:1"


PROFILE_CASES = {
    "vela": {
        "selector": {"carina.dev/pool": "vela"},
        "gpu_toleration": True,
        "annotations": {"k8s.v1.cni.cncf.io/networks": "roce-sriov"},
        "env": {"NCCL_IB_GID_INDEX": "3", "NCCL_IB_HCA": "mlx5"},
        "extra": {},
        "topology": None,
    },
    "blue-vela": {
        "selector": {"carina.dev/pool": "blue-vela"},
        "gpu_toleration": True,
        "annotations": None,
        "env": {"NCCL_IB_HCA": "mlx5", "NCCL_NET_GDR_LEVEL": "PHB"},
        "extra": {"rdma/rdma_shared_device_ib": "1"},
        "topology": ("carina.dev/scalable-unit", "Preferred"),
    },
    "none": {
        "selector": None,
        "gpu_toleration": False,
        "annotations": None,
        "env": {},
        "extra": {},
        "topology": None,
    },
}


@pytest.mark.parametrize("profile", list(PROFILE_CASES))
def test_profiles_render_placement_network_and_nccl(profile):
    case = PROFILE_CASES[profile]
    gpus = 0 if profile == "none" else 8
    pod = build_worker_pod(
        job(cluster=profile, resources={"gpus": gpus, "cpu": "16", "memory": "64Gi"}),
        0,
        0,
        SETTINGS,
    )
    spec, meta = pod["spec"], pod["metadata"]
    assert spec.get("nodeSelector") == case["selector"]
    assert (profiles.GPU_TOLERATION in spec["tolerations"]) == case["gpu_toleration"]
    profile_annotations = {k: v for k, v in meta["annotations"].items() if k != SPEC_ANNOTATION}
    assert profile_annotations == (case["annotations"] or {})
    env = env_of(pod)
    assert {k: env.get(k) for k in case["env"]} == case["env"]
    if profile == "none":
        assert not any(k.startswith("NCCL_") for k in env)
    res = spec["containers"][0]["resources"]
    expected = dict(case["extra"]) | ({"nvidia.com/gpu": "8"} if gpus else {})
    for name, value in expected.items():
        assert res["requests"][name] == value == res["limits"][name]
    assert res["requests"]["cpu"] == "16"
    assert res["limits"]["memory"] == "64Gi"
    # A profile's default topology pins a gang once placement chose its domain (test_topology).
    default = profiles.profile_for(profile).topology
    assert ((default.level, default.mode) if default else None) == case["topology"]
    assert "podAffinity" not in spec.get("affinity", {})


def test_none_profile_with_gpus_tolerates_the_gpu_taint():
    pod = build_worker_pod(job(resources={"gpus": 1}), 0, 0, SETTINGS)
    assert profiles.GPU_TOLERATION in pod["spec"]["tolerations"]


def test_workers_leave_a_failed_node_after_the_configured_time():
    pod = build_worker_pod(job(), 0, 0, RenderSettings(node_failure_seconds=42))
    noexec = [t for t in pod["spec"]["tolerations"] if t["effect"] == "NoExecute"]
    assert {t["key"] for t in noexec} == {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }
    assert {t["tolerationSeconds"] for t in noexec} == {42}


def test_profile_names_agree_with_the_test_cluster_pools():
    assert profiles.GPU_RESOURCE == pools.GPU_RESOURCE
    assert profiles.RDMA_RESOURCE == pools.RDMA_RESOURCE
    assert profiles.POOL_LABEL == pools.POOL_LABEL
    assert profiles.SCALABLE_UNIT_LABEL == pools.SCALABLE_UNIT_LABEL
    assert profiles.VELA.node_selector[pools.POOL_LABEL] == pools.VELA.name
    assert profiles.BLUE_VELA.node_selector[pools.POOL_LABEL] == pools.BLUE_VELA.name
    taint = pools.GPU_TAINT
    assert profiles.GPU_TOLERATION["key"] == taint["key"]
    assert profiles.GPU_TOLERATION["effect"] == taint["effect"]


def test_headless_service_resolves_workers_before_they_are_ready():
    svc = build_service(job(), SETTINGS)
    assert svc["metadata"]["name"] == "llm"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"carina.dev/job": "llm"}
    assert svc["spec"]["ports"][0]["port"] == 29500


def test_each_pod_carries_the_workload_spec_that_its_spec_volume_projects():
    pod = build_worker_pod(job(), 1, 0, SETTINGS)
    doc = json.loads(pod["metadata"]["annotations"][SPEC_ANNOTATION])
    assert doc["kind"] == "pretrain"
    assert doc["config"]["steps"] == 20
    assert "batchSize" in doc["config"]
    assert "batch_size" not in doc["config"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "spec")
    (item,) = volume["downwardAPI"]["items"]
    assert item["path"] == "spec.json"
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{SPEC_ANNOTATION}']"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["CARINA_SPEC"] == "/etc/carina/spec.json"


def test_a_template_annotation_never_replaces_the_spec():
    templated = job(template={"metadata": {"annotations": {SPEC_ANNOTATION: "{}", "team": "a"}}})
    meta = build_worker_pod(templated, 0, 0, SETTINGS)["metadata"]
    assert meta["annotations"]["team"] == "a"
    assert json.loads(meta["annotations"][SPEC_ANNOTATION])["kind"] == "pretrain"


def test_service_account_and_pull_secrets_come_from_settings():
    settings = RenderSettings(service_account="carina-worker", image_pull_secrets=("regcred",))
    spec = build_worker_pod(job(), 0, 0, settings)["spec"]
    assert spec["serviceAccountName"] == "carina-worker"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
