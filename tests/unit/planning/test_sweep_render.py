"""A sweep's pods: worker 0 the Ray head, the others Ray workers, with Ray's named ports."""

from __future__ import annotations

from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.planning.render import (
    RAY_ROLE_LABEL,
    RenderSettings,
    build_worker_pod,
)
from carina.workloads.config import RAY_PORTS

SETTINGS = RenderSettings(image="carina:test")


def sweep_job(replicas: int = 3, **resources: object) -> TrainingJob:
    manifest = (
        make_job("lr-sweep")
        .with_replicas(replicas)
        .with_spec(
            workload={"sweep": {"objective": "synthetic", "trialGpus": 0.25}},
            resources={"cpu": "8", "memory": "32Gi", "gpus": 8, **resources},
        )
    )
    manifest["metadata"].update(namespace="team-a", uid="uid-1", generation=1)
    return TrainingJob.parse(manifest)


def ports_of(pod: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_worker_zero_is_the_head_and_the_others_join_it():
    job = sweep_job()
    roles = [
        build_worker_pod(job, i, 0, SETTINGS)["metadata"]["labels"][RAY_ROLE_LABEL]
        for i in range(3)
    ]
    assert roles == ["head", "worker", "worker"]
    env = env_of(build_worker_pod(job, 2, 0, SETTINGS))
    assert env["MASTER_ADDR"] == "lr-sweep-worker-0.lr-sweep.team-a.svc"  # the head's address


def test_every_sweep_pod_declares_the_ports_ray_needs_by_name():
    for index in (0, 1):
        ports = ports_of(build_worker_pod(sweep_job(), index, 0, SETTINGS))
        assert ports["ray-gcs"] == 6379
        for name, port in RAY_PORTS.items():
            assert ports[name] == port
        assert "metrics" in ports  # the worker contract's own ports stay
        assert all(len(name) <= 15 for name in ports)  # Kubernetes' limit on port names
        assert len(set(ports.values())) == len(ports)


def test_the_object_store_gets_memory_backed_shared_memory_and_pinned_cpus():
    pod = build_worker_pod(sweep_job(), 0, 0, SETTINGS)
    [shm] = [v for v in pod["spec"]["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/dev/shm" in mounts
    # 8 CPUs over 8 ranks (one per GPU): the Ray node counts 1 x 8, not the host's cores.
    assert env_of(pod)["OMP_NUM_THREADS"] == "1"


def test_other_workloads_have_no_ray_role_or_ports():
    job = TrainingJob.parse(make_job("plain").with_replicas(2))
    pod = build_worker_pod(job, 0, 0, SETTINGS)
    assert RAY_ROLE_LABEL not in pod["metadata"]["labels"]
    assert "ray-gcs" not in ports_of(pod)
    assert "OMP_NUM_THREADS" not in env_of(pod)
