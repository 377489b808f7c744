"""The worker pod template: what a user adds to a worker pod, and the claims its URIs name.

`add_template` is the last step of `render.build_worker_pod` (`apply_template` does the same on
a copy). It adds to the pod the `spec.template` of the job, in Kubernetes' own shapes, and a
PersistentVolumeClaim volume for every claim a `pvc://claim/path` URI of the job names (the
checkpoint URI and the workload's checkpoint inputs), mounted where the worker's storage looks
for it (`<DEFAULT_PVC_MOUNT_ROOT>/<claim>`).

Merge rules: the template adds to what the renderer built. Where both name the same thing
(a label, an annotation, a node selector key, an environment variable of the profile such as
NCCL_SOCKET_IFNAME), the template wins: it knows the cluster better than a profile does. What
the platform owns (the contract's environment, carina.dev/ labels, its volumes and mount
paths) is refused by the API before a job gets here (`api.RESERVED_*`). Pod affinity terms
join the profile's preferred gang colocation; tolerations and pull secrets are added.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any
from urllib.parse import urlparse

from carina.platform.api.types import RESERVED_VOLUME_PREFIX, TrainingJob, WorkerTemplateSpec
from carina.workloads.contract import DEFAULT_PVC_MOUNT_ROOT, PVC_MOUNT_ROOT_ENV

PVC_VOLUME_PREFIX = f"{RESERVED_VOLUME_PREFIX}pvc-"
# Workload fields that name a checkpoint to read (pretrain.init, finetune.base, ...).
CHECKPOINT_INPUT_FIELDS = ("init", "base", "compare_to")
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def pvc_claims(job: TrainingJob, checkpoint_uri: str) -> dict[str, bool]:
    """The claims the job's pvc:// URIs name, each with whether workers write to it."""
    config = job.spec.workload.config
    inputs = [getattr(config, f, None) for f in CHECKPOINT_INPUT_FIELDS]
    claims: dict[str, bool] = {}
    for uri, writes in [(u, False) for u in inputs if u] + [(checkpoint_uri, True)]:
        parsed = urlparse(uri)
        if parsed.scheme == "pvc" and parsed.netloc:
            claims[parsed.netloc] = claims.get(parsed.netloc, False) or writes
    return claims


def pvc_volume_name(claim: str) -> str:
    """The pod volume of `claim`: a DNS label (63 characters), so a long name is shortened."""
    name = PVC_VOLUME_PREFIX + claim
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(claim.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def _add_claims(spec: dict[str, Any], container: dict[str, Any], claims: dict[str, bool]) -> None:
    for claim, writes in sorted(claims.items()):
        name = pvc_volume_name(claim)
        spec["volumes"].append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
        mount = {"name": name, "mountPath": f"{DEFAULT_PVC_MOUNT_ROOT}/{claim}"}
        container["volumeMounts"].append(mount if writes else mount | {"readOnly": True})
    if claims:
        # Where the worker's storage resolves pvc:// (a Secret given by envFrom cannot move it).
        container["env"].append({"name": PVC_MOUNT_ROOT_ENV, "value": DEFAULT_PVC_MOUNT_ROOT})


def _merge_env(current: list[dict[str, Any]], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`current` with same-named variables replaced in place and the others appended in order
    (after the contract's, so a value may refer to them as $(CARINA_JOB))."""
    by_name = {e["name"]: e for e in added}
    merged = [by_name.pop(e["name"], e) for e in current]
    return merged + list(by_name.values())


def _merge_affinity(current: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """The user's affinity, with the platform's terms kept beside theirs.

    Pod (anti-)affinity terms add up. The platform's required node expressions (health,
    topology) hold in every one of the user's node selector terms (terms are ORed, the
    expressions inside one are ANDed); preferred node terms add up.
    """
    merged = current | copy.deepcopy(added)
    ours_node, theirs_node = current.get("nodeAffinity", {}), added.get("nodeAffinity", {})
    if ours_node and theirs_node:
        node = dict(copy.deepcopy(theirs_node))
        must = [
            e
            for t in ours_node.get(_REQUIRED, {}).get("nodeSelectorTerms", [])
            for e in t.get("matchExpressions", [])
        ]
        if must:
            terms = node.get(_REQUIRED, {}).get("nodeSelectorTerms") or [{}]
            node[_REQUIRED] = {
                "nodeSelectorTerms": [
                    t | {"matchExpressions": list(t.get("matchExpressions", [])) + must}
                    for t in terms
                ]
            }
        preferred = ours_node.get(_PREFERRED, []) + theirs_node.get(_PREFERRED, [])
        if preferred:
            node[_PREFERRED] = preferred
        merged["nodeAffinity"] = node
    for kind in ("podAffinity", "podAntiAffinity"):
        ours, theirs = current.get(kind, {}), added.get(kind, {})
        if ours and theirs:
            merged[kind] = {
                when: ours.get(when, []) + theirs.get(when, [])
                for when in (_PREFERRED, _REQUIRED)
                if ours.get(when) or theirs.get(when)
            }
    return merged


def _append_new(current: list[Any], added: list[Any]) -> list[Any]:
    return list(current) + [x for x in added if x not in current]


def _apply_spec(spec: dict[str, Any], container: dict[str, Any], user: WorkerTemplateSpec) -> None:
    wire = user.to_wire()
    if user.env:
        container["env"] = _merge_env(container.get("env", []), wire["env"])
    if user.env_from:
        container["envFrom"] = wire["envFrom"]
    if user.volumes:
        spec["volumes"] = spec.get("volumes", []) + wire["volumes"]
    if user.volume_mounts:
        container["volumeMounts"] = container.get("volumeMounts", []) + wire["volumeMounts"]
    if user.image_pull_policy:
        container["imagePullPolicy"] = user.image_pull_policy
    if user.node_selector:
        spec["nodeSelector"] = spec.get("nodeSelector", {}) | user.node_selector
    if user.tolerations:
        spec["tolerations"] = _append_new(spec.get("tolerations", []), wire["tolerations"])
    if user.affinity:
        spec["affinity"] = _merge_affinity(spec.get("affinity", {}), wire["affinity"])
    if user.image_pull_secrets:
        spec["imagePullSecrets"] = _append_new(
            spec.get("imagePullSecrets", []), wire["imagePullSecrets"]
        )
    if user.service_account_name:
        spec["serviceAccountName"] = user.service_account_name
    if user.priority_class_name:
        spec["priorityClassName"] = user.priority_class_name


def apply_template(pod: dict[str, Any], job: TrainingJob, checkpoint_uri: str) -> dict[str, Any]:
    """The worker pod `pod` with the job's template and pvc:// claims added (a new dict)."""
    return add_template(copy.deepcopy(pod), job, checkpoint_uri)


def add_template(pod: dict[str, Any], job: TrainingJob, checkpoint_uri: str) -> dict[str, Any]:
    """`apply_template` on `pod` itself, for a caller that has just built it and shares none
    of its parts (build_worker_pod)."""
    meta, spec = pod["metadata"], pod["spec"]
    container = spec["containers"][0]
    spec.setdefault("volumes", [])
    container.setdefault("volumeMounts", [])
    container.setdefault("env", [])
    _add_claims(spec, container, pvc_claims(job, checkpoint_uri))

    template = job.spec.template
    if template is not None and template.metadata is not None:
        if template.metadata.labels:
            meta["labels"] = meta.get("labels", {}) | template.metadata.labels
        if template.metadata.annotations:
            meta["annotations"] = meta.get("annotations", {}) | template.metadata.annotations
    if template is not None and template.spec is not None:
        _apply_spec(spec, container, template.spec)
    return pod
