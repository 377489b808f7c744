"""Rendering: the child objects of a TrainingJob as plain manifests (dicts).

A job has a headless Service (stable DNS for rank 0, the rendezvous endpoint), a ConfigMap
holding the workload spec the workers read (`CARINA_SPEC`) and one Pod per worker, named
`<job>-worker-<index>` so that creating one twice is impossible. The worker environment is
the worker contract (DESIGN.md): torchrun's variables plus CARINA_*.

Grace period. On SIGTERM torch's elastic agent (torch 2.15,
`torch/distributed/elastic/agent/server/api.py` `SimpleElasticAgent.run` ->
`_shutdown(sig, timeout=shutdown_timeout)` -> `multiprocessing/api.py` `_close`) forwards the
signal to its workers, waits `shutdown_timeout` seconds (default 30, from
`TORCH_ELASTIC_SHUTDOWN_TIMEOUT` or `--shutdown-timeout`) and then SIGKILLs them. A 30 s
window is too short to finish a step and save a large checkpoint, so the pod sets
TORCH_ELASTIC_SHUTDOWN_TIMEOUT to the save budget and terminationGracePeriodSeconds to that
budget plus a margin for the agent's own teardown, so the kubelet's SIGKILL never comes first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from carina.platform.api import API_VERSION, KIND, TrainingJob
from carina.platform.planning.observed import INDEX_LABEL, JOB_LABEL, RESTART_LABEL
from carina.platform.planning.profiles import GPU_RESOURCE, GPU_TOLERATION, profile_for

SPEC_DIR = "/etc/carina"
SPEC_FILE = "spec.json"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
WORKER_CONTAINER = "worker"
WORKER_COMMAND = ("python", "-m", "carina.workloads")
MANAGED_BY = "carina-operator"


@dataclass(frozen=True)
class RenderSettings:
    """What the platform decides for every job (the operator reads these from its env)."""

    image: str = "ghcr.io/carina-dev/carina:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    master_port: int = 29500
    metrics_port: int = 9400
    # Where checkpoints go when a job names no URI: <root>/<namespace>/<job>.
    checkpoint_root: str = "s3://carina-checkpoints"
    # Seconds the elastic agent waits after forwarding SIGTERM (finish a step, save).
    shutdown_timeout_seconds: int = 120
    # Added to the above for terminationGracePeriodSeconds (the agent's own teardown).
    grace_margin_seconds: int = 30
    # How long a worker stays on a NotReady/unreachable node before it is evicted (and the
    # gang restarts elsewhere); Kubernetes' default of 300 s wastes a whole gang's GPUs.
    node_failure_seconds: int = 60
    shm_size: str = "8Gi"
    service_account: str | None = None  # workers' ServiceAccount (no token is mounted)
    image_pull_secrets: tuple[str, ...] = ()


def worker_name(job_name: str, index: int) -> str:
    """The stable name of worker `index`."""
    return f"{job_name}-worker-{index}"


def service_name(job_name: str) -> str:
    return job_name


def configmap_name(job_name: str) -> str:
    return f"{job_name}-spec"


def _namespace(job: TrainingJob) -> str:
    return job.metadata.namespace or "default"


def job_labels(job: TrainingJob) -> dict[str, str]:
    """Labels every child object of the job carries."""
    return {
        JOB_LABEL: job.metadata.name,
        "app.kubernetes.io/name": "carina-worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_references(job: TrainingJob) -> list[dict[str, Any]]:
    """The job as controller of its children (garbage collection deletes them with it)."""
    if not job.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": job.metadata.name,
            "uid": job.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _metadata(job: TrainingJob, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": _namespace(job),
        "labels": labels or job_labels(job),
    }
    owners = owner_references(job)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def spec_document(job: TrainingJob) -> dict[str, Any]:
    """What CARINA_SPEC holds: the workload kind and its config, camelCase."""
    workload = job.spec.workload
    return {"kind": workload.kind, "config": workload.config.to_wire()}


def checkpoint_uri(job: TrainingJob, settings: RenderSettings) -> str:
    """The job's checkpoint URI, defaulting under the platform's checkpoint root."""
    if job.spec.checkpoint.uri:
        return job.spec.checkpoint.uri
    root = settings.checkpoint_root.rstrip("/")
    return f"{root}/{_namespace(job)}/{job.metadata.name}"


def build_service(job: TrainingJob, settings: RenderSettings) -> dict[str, Any]:
    """The headless Service that gives worker 0 a DNS name before it is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, service_name(job.metadata.name)),
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_LABEL: job.metadata.name},
            "publishNotReadyAddresses": True,  # rendezvous happens before readiness
            "ports": [
                {"name": "rendezvous", "port": settings.master_port, "protocol": "TCP"},
            ],
        },
    }


def build_configmap(job: TrainingJob) -> dict[str, Any]:
    """The ConfigMap mounted at /etc/carina: the workload spec as JSON."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, configmap_name(job.metadata.name)),
        "data": {SPEC_FILE: json.dumps(spec_document(job), sort_keys=True)},
    }


def worker_env(
    job: TrainingJob, index: int, restart: int, settings: RenderSettings
) -> dict[str, str]:
    """The worker contract's environment for worker `index` (profile NCCL settings included)."""
    name, ns = job.metadata.name, _namespace(job)
    env = {
        "RANK": str(index),
        "WORLD_SIZE": str(job.spec.replicas),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": f"{worker_name(name, 0)}.{service_name(name)}.{ns}.svc",
        "MASTER_PORT": str(settings.master_port),
        "CARINA_JOB": name,
        "CARINA_NAMESPACE": ns,
        "CARINA_SPEC": f"{SPEC_DIR}/{SPEC_FILE}",
        "CARINA_CHECKPOINT_URI": checkpoint_uri(job, settings),
        "CARINA_CHECKPOINT_INTERVAL": str(job.spec.checkpoint.interval_steps),
        "CARINA_CHECKPOINT_KEEP": str(job.spec.checkpoint.keep),
        "CARINA_RESTART": str(restart),
        "CARINA_METRICS_PORT": str(settings.metrics_port),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(settings.shutdown_timeout_seconds),
    }
    env.update(profile_for(job.spec.cluster).env)
    return env


def _resources(job: TrainingJob) -> dict[str, Any]:
    res = job.spec.resources
    requests: dict[str, Any] = {"cpu": str(res.cpu), "memory": str(res.memory)}
    limits: dict[str, Any] = {"memory": str(res.memory)}
    extended = dict(profile_for(job.spec.cluster).extra_resources)
    if res.gpus:
        extended[GPU_RESOURCE] = str(res.gpus)
    requests.update(extended)
    limits.update(extended)  # extended resources: limit must equal request
    return {"requests": requests, "limits": limits}


def _tolerations(job: TrainingJob, settings: RenderSettings) -> list[dict[str, Any]]:
    profile = profile_for(job.spec.cluster)
    out = [dict(t) for t in profile.tolerations]
    if job.spec.resources.gpus and GPU_TOLERATION not in out:
        out.append(dict(GPU_TOLERATION))
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        out.append(
            {
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": settings.node_failure_seconds,
            }
        )
    return out


def build_worker_pod(
    job: TrainingJob, index: int, restart: int, settings: RenderSettings
) -> dict[str, Any]:
    """The Pod of worker `index`, generation `restart` (CARINA_RESTART)."""
    name = job.metadata.name
    profile = profile_for(job.spec.cluster)
    labels = job_labels(job) | {INDEX_LABEL: str(index), RESTART_LABEL: str(restart)}
    meta = _metadata(job, worker_name(name, index), labels)
    if profile.annotations:
        meta["annotations"] = dict(profile.annotations)

    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": job.spec.image or settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(WORKER_COMMAND),
        "env": [
            {"name": k, "value": v} for k, v in worker_env(job, index, restart, settings).items()
        ],
        "ports": [
            {"name": "rendezvous", "containerPort": settings.master_port},
            {"name": "metrics", "containerPort": settings.metrics_port},
        ],
        "resources": _resources(job),
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
    }
    if profile.capabilities:
        container["securityContext"] = {"capabilities": {"add": list(profile.capabilities)}}

    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the gang restarts as a whole, by the failure policy
        "hostname": worker_name(name, index),
        "subdomain": service_name(name),
        "terminationGracePeriodSeconds": (
            settings.shutdown_timeout_seconds + settings.grace_margin_seconds
        ),
        "automountServiceAccountToken": False,  # workers need no API access
        "enableServiceLinks": False,
        "containers": [container],
        "tolerations": _tolerations(job, settings),
        "volumes": [
            {"name": "spec", "configMap": {"name": configmap_name(name)}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
        ],
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if profile.node_selector:
        spec["nodeSelector"] = dict(profile.node_selector)
    if profile.colocate_within:
        spec["affinity"] = {
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {JOB_LABEL: name}},
                            "topologyKey": profile.colocate_within,
                        },
                    }
                ]
            }
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
