"""Rendering: the child objects of a TrainingJob as plain manifests (dicts).

A job has a headless Service (stable DNS for worker 0, the rendezvous endpoint) and one Pod
per worker. Each pod carries the workload spec its ranks read (`CARINA_SPEC`) in an annotation
that a downward-API volume turns into the file: no ConfigMap to create, refresh or delete, one
API write fewer per job, and a pod always holds the spec it was created for. The worker
environment is the worker contract (`carina.workloads.contract`), built by its
`WorkerContext.pod_env`: the pod's entry process, `carina.workloads.supervisor`, starts one
rank per GPU from it (`LOCAL_WORLD_SIZE`), gives each its `RANK` and `LOCAL_RANK`, forwards
SIGTERM to all of them and exits with the first failing rank's code.

Grace period. On SIGTERM every rank finishes its step, the ranks agree, save collectively and
exit; the entry process waits for them with no deadline of its own. The pod's
terminationGracePeriodSeconds is the save budget (the job's
`spec.preemption.checkpointGracePeriodSeconds`, else the operator's `shutdown_timeout_seconds`)
plus a margin for the entry process's own teardown, so the kubelet's SIGKILL never comes first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from carina.platform.api.health import AVOIDED, FULL_PASS_LABEL, HEALTH_LABEL
from carina.platform.api.quantity import parse_quantity
from carina.platform.api.types import API_VERSION, KIND, TopologyMode, TrainingJob
from carina.platform.planning.dependencies import resolved_config
from carina.platform.planning.observed import INDEX_LABEL, JOB_LABEL, RESTART_LABEL
from carina.platform.planning.profiles import (
    GPU_RESOURCE,
    GPU_TOLERATION,
    profile_for,
    topology_request,
)
from carina.platform.planning.template import add_template
from carina.workloads import contract
from carina.workloads.config import RAY_PORTS
from carina.workloads.contract import SPEC_DIR, SPEC_FILE, WorkerContext

TERMINATION_MESSAGE_PATH = contract.DEFAULT_TERMINATION_LOG
WORKER_CONTAINER = "worker"
WORKER_COMMAND = ("python", "-m", "carina.workloads.supervisor")
MANAGED_BY = "carina-operator"
# The pod annotation holding the workload spec; the "spec" volume projects it to SPEC_FILE.
SPEC_ANNOTATION = "carina.dev/spec"
# A sweep's worker 0 runs the Ray head, the others Ray worker nodes (workloads/sweep/).
RAY_ROLE_LABEL = "carina.dev/ray-role"


@dataclass(frozen=True)
class RenderSettings:
    """What the platform decides for every job (the operator reads these from its env)."""

    image: str = "ghcr.io/carina-dev/carina:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    master_port: int = 29500
    metrics_port: int = 9400
    # Where checkpoints go when a job names no URI: <root>/<namespace>/<job>.
    checkpoint_root: str = "s3://carina-checkpoints"
    # Seconds the ranks have after SIGTERM to finish a step and save.
    shutdown_timeout_seconds: int = 120
    # Added to the above for terminationGracePeriodSeconds (the entry process's teardown).
    grace_margin_seconds: int = 30
    # How long a worker stays on a NotReady/unreachable node before it is evicted (and the
    # gang restarts elsewhere); Kubernetes' default of 300 s wastes a whole gang's GPUs.
    node_failure_seconds: int = 60
    shm_size: str = "8Gi"
    service_account: str | None = None  # workers' ServiceAccount (no token is mounted)
    image_pull_secrets: tuple[str, ...] = ()


def worker_name(job_name: str, index: int) -> str:
    """The stable host name of worker `index` (its DNS name under the job's Service)."""
    return f"{job_name}-worker-{index}"


def pod_name(job_name: str, index: int, restart: int) -> str:
    """The Pod of worker `index` in generation `restart`.

    Each generation's pods have names of their own, so the finished pods of a failed
    generation (their logs and termination messages) can outlive the restart; the host name
    stays `worker_name`, and Kubernetes leaves finished pods out of the Service's endpoints.
    """
    return f"{worker_name(job_name, index)}-r{restart}"


def service_name(job_name: str) -> str:
    return job_name


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
    """What CARINA_SPEC holds: the workload kind and its config, camelCase, each job://
    input resolved to the checkpoint URI `status.inputs` records (`UnresolvedReference` while
    one is not: a worker only ever reads URIs)."""
    return contract.spec_document(job.spec.workload.kind, resolved_config(job))


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


def spec_text(job: TrainingJob) -> str:
    """The spec document as the worker's file holds it (the pod's SPEC_ANNOTATION)."""
    return json.dumps(spec_document(job), sort_keys=True)


def ranks_per_worker(job: TrainingJob) -> int:
    """Ranks each worker runs: one per GPU, else `resources.ranksPerWorker` (default 1)."""
    res = job.spec.resources
    return res.gpus or res.ranks_per_worker or 1


def worker_context(
    job: TrainingJob,
    index: int,
    restart: int,
    master_addr: str,
    master_port: int,
    metrics_port: int,
    checkpoint: str,
    spec_path: str,
) -> WorkerContext:
    """The worker contract of worker `index`: shared by the operator and the embedded platform."""
    local = ranks_per_worker(job)
    return WorkerContext(
        group_rank=index,
        local_world_size=local,
        world_size=job.spec.replicas * local,
        master_addr=master_addr,
        master_port=master_port,
        job=job.metadata.name,
        namespace=_namespace(job),
        spec=spec_path,
        checkpoint_uri=checkpoint,
        checkpoint_interval=job.spec.checkpoint.interval_steps,
        checkpoint_keep=job.spec.checkpoint.keep,
        restart=restart,
        metrics_port=metrics_port,
    )


def worker_env(
    job: TrainingJob, index: int, restart: int, settings: RenderSettings
) -> dict[str, str]:
    """The worker contract's environment for worker `index` (profile NCCL settings included)."""
    name, ns = job.metadata.name, _namespace(job)
    ctx = worker_context(
        job,
        index,
        restart,
        master_addr=f"{worker_name(name, 0)}.{service_name(name)}.{ns}.svc",
        master_port=settings.master_port,
        metrics_port=settings.metrics_port,
        checkpoint=checkpoint_uri(job, settings),
        spec_path=f"{SPEC_DIR}/{SPEC_FILE}",
    )
    env = ctx.pod_env()
    env.update(profile_for(job.spec.cluster).env)
    if job.spec.workload.sweep is not None:
        env["OMP_NUM_THREADS"] = str(sweep_threads(job))
    return env


def sweep_threads(job: TrainingJob) -> int:
    """A sweep worker's CPUs per rank (its Ray node pins `num_cpus` to them, not the node's)."""
    cpus = int(parse_quantity(job.spec.resources.cpu))
    return max(1, cpus // ranks_per_worker(job))


def ray_role(job: TrainingJob, index: int) -> str | None:
    """`head` for a sweep's worker 0, `worker` for the others; None for other workloads."""
    if job.spec.workload.sweep is None:
        return None
    return "head" if index == 0 else "worker"


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


def save_budget(job: TrainingJob, settings: RenderSettings) -> int:
    """Seconds every rank has to save after SIGTERM: the job's own, else the operator's."""
    own = job.spec.preemption.checkpoint_grace_period_seconds
    return settings.shutdown_timeout_seconds if own is None else own


def required_node_terms(job: TrainingJob, full_pass_after: int | None) -> list[dict[str, Any]]:
    """The node affinity every worker requires (one term: all of these hold).

    Never a node the health agent found degraded or broken (`carina.dev/health` WARN or
    EVICT; an unchecked node has no label and is allowed). With `full_pass_after` (unix
    seconds: a preflight-gated job), only nodes whose full checks passed after it. A gang
    pinned to a topology domain with mode Required (`status.placement`), only its domain.
    """
    terms: list[dict[str, Any]] = [
        {"key": HEALTH_LABEL, "operator": "NotIn", "values": list(AVOIDED)}
    ]
    if full_pass_after is not None:
        terms.append({"key": FULL_PASS_LABEL, "operator": "Gt", "values": [str(full_pass_after)]})
    terms += _pinned(job)[0]
    return terms


def _pinned(job: TrainingJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The gang's topology domain (`status.placement`, chosen by `planning.placement`) as
    node affinity: (required expressions, preferred terms)."""
    request = topology_request(job)
    placement = job.status.placement if job.status is not None else None
    if request is None or placement is None or placement.level != request.level:
        return [], []  # unplaced, or placed for a level the spec no longer asks for
    expression = {"key": placement.level, "operator": "In", "values": [placement.domain]}
    if request.mode == TopologyMode.REQUIRED:
        return [expression], []
    return [], [{"weight": 100, "preference": {"matchExpressions": [expression]}}]


def build_worker_pod(
    job: TrainingJob,
    index: int,
    restart: int,
    settings: RenderSettings,
    full_pass_after: int | None = None,
) -> dict[str, Any]:
    """The Pod of worker `index`, generation `restart` (CARINA_RESTART).

    `full_pass_after`: the job is gated on a preflight check (`required_node_terms`).
    """
    name = job.metadata.name
    profile = profile_for(job.spec.cluster)
    labels = job_labels(job) | {INDEX_LABEL: str(index), RESTART_LABEL: str(restart)}
    role = ray_role(job, index)
    if role is not None:
        labels[RAY_ROLE_LABEL] = role
    meta = _metadata(job, pod_name(name, index, restart), labels)
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
        "terminationMessagePolicy": "FallbackToLogsOnError",  # a crash leaves its log tail
    }
    if role is not None:  # Ray's fixed ports (the worker port range is not listed)
        container["ports"] += [{"name": n, "containerPort": p} for n, p in RAY_PORTS.items()]
    if profile.capabilities:
        container["securityContext"] = {"capabilities": {"add": list(profile.capabilities)}}

    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the gang restarts as a whole, by the failure policy
        "hostname": worker_name(name, index),
        "subdomain": service_name(name),
        "terminationGracePeriodSeconds": save_budget(job, settings) + settings.grace_margin_seconds,
        "automountServiceAccountToken": False,  # workers need no API access
        "enableServiceLinks": False,
        "containers": [container],
        "tolerations": _tolerations(job, settings),
        "volumes": [
            {
                "name": "spec",
                "downwardAPI": {
                    "items": [
                        {
                            "path": SPEC_FILE,
                            "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"},
                        }
                    ]
                },
            },
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
        ],
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if profile.node_selector:
        spec["nodeSelector"] = dict(profile.node_selector)
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": required_node_terms(job, full_pass_after)}
                ]
            }
        }
    }
    preferred = _pinned(job)[1]  # a Preferred gang's domain
    if preferred:
        spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = (
            preferred
        )
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    pod = add_template(pod, job, checkpoint_uri(job, settings))  # every part built above
    # Set last: a template annotation of the same key never replaces the spec.
    pod["metadata"].setdefault("annotations", {})[SPEC_ANNOTATION] = spec_text(job)
    return pod
