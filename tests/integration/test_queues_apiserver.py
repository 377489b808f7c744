"""The queueing CRDs on a real kube-apiserver: they are established, the examples are admitted,
bad queues are refused naming the field, and the control plane's kubernetes backend serves
ClusterQueues, their pending jobs and LocalQueues from the real objects, RBAC deciding who
may read them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import BAD_QUEUE_MANIFESTS, make_cluster_queue, make_job
from fastapi.testclient import TestClient

from carina.platform.api.queues import ClusterQueue
from carina.platform.controlplane.main import create_app
from carina.platform.controlplane.settings import Settings
from carina.testcluster import TestCluster

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
QUEUE_EXAMPLES = ROOT / "examples" / "queues"
ADMITTED_AT = "2026-01-01T00:00:00Z"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(cluster: TestCluster, manifest: dict[str, Any], *args: str, check: bool = True) -> Any:
    return cluster.kubectl(
        "create", *args, "-f", "-", "-o", "json", input=json.dumps(manifest), check=check
    )


def patch_status(cluster: TestCluster, *target: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", *target, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


@pytest.fixture
def cluster_queue(k8s_cluster: TestCluster) -> Iterator[str]:
    """A fresh ClusterQueue's name (16 GPUs, 256 CPUs, cohort research), deleted afterwards."""
    name = _unique("cq")
    create(k8s_cluster, make_cluster_queue(name))
    yield name
    k8s_cluster.kubectl("delete", "clusterqueue", name, "--wait=false", check=False)


# -- the CRDs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crd", "scope", "short"),
    [
        ("clusterqueues.carina.dev", "Cluster", ["cq"]),
        ("localqueues.carina.dev", "Namespaced", ["lq"]),
        ("trainingpriorityclasses.carina.dev", "Cluster", ["tpc"]),
        ("trainingjobs.carina.dev", "Namespaced", ["tj"]),
    ],
)
def test_every_crd_is_established(
    k8s_cluster: TestCluster, crd: str, scope: str, short: list[str]
) -> None:
    obj = k8s_cluster.get_json("crd", crd)
    conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NonStructuralSchema") is None
    assert obj["spec"]["scope"] == scope
    assert obj["status"]["acceptedNames"]["shortNames"] == short


def test_the_queue_examples_are_admitted(k8s_cluster: TestCluster) -> None:
    documents = [
        d for p in sorted(QUEUE_EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
    ]
    namespaces = {d["metadata"]["namespace"] for d in documents if d["metadata"].get("namespace")}
    created = []
    for ns in sorted(namespaces):
        if k8s_cluster.kubectl("get", "namespace", ns, check=False).returncode != 0:
            k8s_cluster.kubectl("create", "namespace", ns)
            created.append(ns)
    try:
        # Server-side dry run: the API server checks every object (schema, CEL rules) and
        # stores none, so the examples' cluster-wide names meet no other test's objects.
        result = k8s_cluster.kubectl(
            "apply", "--dry-run=server", "-f", str(QUEUE_EXAMPLES), "-o", "name", check=False
        )
    finally:
        for ns in created:
            k8s_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == len(documents)
    assert "clusterqueue.carina.dev/team-a" in result.stdout


@pytest.mark.parametrize("case", sorted(BAD_QUEUE_MANIFESTS))
def test_api_server_refuses_bad_queue_objects_naming_the_field(
    k8s_cluster: TestCluster, namespace: str, case: str
) -> None:
    manifest, path, words = BAD_QUEUE_MANIFESTS[case]
    manifest = json.loads(json.dumps(manifest))
    manifest["metadata"]["name"] = _unique("bad")
    result = create(k8s_cluster, manifest, "-n", namespace, check=False)
    if result.returncode == 0:  # accepted: do not leave a cluster-scoped object behind
        k8s_cluster.kubectl("delete", "-f", "-", input=result.stdout, check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert path in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("resources", "said"),
    [
        (
            [{"name": "nvidia.com/gpu", "nominalQuota": 16, "lendingLimit": 32}],
            ["spec.resources[0].lendingLimit", "lendingLimit must not exceed nominalQuota"],
        ),
        (
            [{"name": "memory", "nominalQuota": "1Ti", "lendingLimit": "1025Gi"}],
            ["spec.resources[0].lendingLimit", "lendingLimit must not exceed nominalQuota"],
        ),
        (
            [{"name": "cpu", "nominalQuota": 8}, {"name": "cpu", "nominalQuota": 4}],
            ["spec.resources[1]", "Duplicate value"],
        ),
        (
            [{"name": "nvidia.com/a100", "nominalQuota": 8}],
            ["spec.resources[0].name", "Unsupported value"],
        ),
    ],
    ids=["lending-above-nominal", "lending-above-nominal-in-units", "duplicate", "unknown"],
)
def test_the_api_server_names_the_exact_field_of_a_bad_quota(
    k8s_cluster: TestCluster, resources: list[dict[str, Any]], said: list[str]
) -> None:
    manifest = make_cluster_queue(_unique("bad"), resources=resources)
    result = create(k8s_cluster, manifest, check=False)
    assert result.returncode != 0
    for words in said:
        assert words in result.stderr, result.stderr


def test_a_lending_limit_equal_to_the_quota_in_other_units_is_accepted(
    k8s_cluster: TestCluster,
) -> None:
    name = _unique("cq")
    manifest = make_cluster_queue(
        name, resources=[{"name": "memory", "nominalQuota": "1Ti", "lendingLimit": "1024Gi"}]
    )
    ClusterQueue.model_validate(manifest)  # the models agree
    create(k8s_cluster, manifest)
    k8s_cluster.kubectl("delete", "clusterqueue", name, "--wait=false")


def test_server_defaults_of_a_cluster_queue_match_the_models(
    k8s_cluster: TestCluster, cluster_queue: str
) -> None:
    stored = k8s_cluster.get_json("clusterqueue", cluster_queue)
    local = ClusterQueue.model_validate(make_cluster_queue(cluster_queue)).to_wire()
    assert stored["spec"] == local["spec"]


# -- the kubernetes backend over REST ---------------------------------------------------------

READER_ROLES = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {name}}}
rules:
- apiGroups: [carina.dev]
  resources: [clusterqueues]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: queue-reader}}
rules:
- apiGroups: [carina.dev]
  resources: [trainingjobs, localqueues]
  verbs: [get, list]
"""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(k8s_cluster: TestCluster, namespace: str) -> Iterator[dict[str, str]]:
    """reader: may read the ClusterQueues and this namespace's jobs and LocalQueues;
    outsider: may read the ClusterQueues only; nobody: nothing."""
    role = _unique("queue-reader")
    k8s_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=READER_ROLES.format(name=role))
    out = {}
    for account in ("reader", "outsider", "nobody"):
        k8s_cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
        if account != "nobody":
            k8s_cluster.kubectl(
                "create", "clusterrolebinding", f"{role}-{account}", f"--clusterrole={role}",
                f"--serviceaccount={namespace}:{account}",
            )  # fmt: skip
        out[account] = k8s_cluster.kubectl(
            "create", "token", account, "-n", namespace
        ).stdout.strip()
    k8s_cluster.kubectl(
        "create", "rolebinding", "reader", "-n", namespace, "--role=queue-reader",
        f"--serviceaccount={namespace}:reader",
    )  # fmt: skip
    yield out
    for account in ("reader", "outsider"):
        k8s_cluster.kubectl(
            "delete", "clusterrolebinding", f"{role}-{account}", "--wait=false", check=False
        )
    k8s_cluster.kubectl("delete", "clusterrole", role, "--wait=false", check=False)


@pytest.fixture
def client(k8s_cluster: TestCluster) -> Iterator[TestClient]:
    settings = Settings(backend="kubernetes", kubeconfig=k8s_cluster.kubeconfig)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _queueing(cq: str, **fields: Any) -> dict[str, Any]:
    return {"status": {"queueing": {"localQueue": "training", "clusterQueue": cq, **fields}}}


@pytest.fixture
def queued(k8s_cluster: TestCluster, namespace: str, cluster_queue: str) -> str:
    """In `namespace`: LocalQueue `training` -> the ClusterQueue, one job admitted (8 GPUs) and
    two waiting; the queue's status as the admission writer would write it."""
    create(
        k8s_cluster,
        {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "LocalQueue",
            "metadata": {"name": "training"},
            "spec": {"clusterQueue": cluster_queue},
        },
        "-n",
        namespace,
    )
    for name in ("running", "second", "first"):
        create(k8s_cluster, make_job(name).with_spec(queue="training"), "-n", namespace)
    admission = {
        "clusterQueue": cluster_queue,
        "usage": {"nvidia.com/gpu": 8, "cpu": 16},
        "admittedAt": ADMITTED_AT,
    }
    for name, fields in (
        ("running", {"admission": admission, "reason": "QuotaReserved"}),
        (
            "second",
            {"reason": "WaitingForQuota", "message": "needs 16 GPUs; 8 free", "position": 2},
        ),
        ("first", {"reason": "WaitingForQuota", "message": "needs 8 GPUs", "position": 1}),
    ):
        patch_status(
            k8s_cluster, "tj", name, "-n", namespace, status=_queueing(cluster_queue, **fields)
        )
    patch_status(
        k8s_cluster,
        "clusterqueue",
        cluster_queue,
        status={
            "status": {
                "resources": [
                    {"name": "nvidia.com/gpu", "nominal": 16, "reserved": 8, "borrowed": 0},
                    {"name": "cpu", "nominal": 256, "reserved": 16, "borrowed": 0},
                ],
                "admittedJobs": 1,
                "pendingJobs": 2,
            }
        },
    )
    return cluster_queue


def test_the_kubernetes_backend_serves_cluster_queues_and_their_pending_jobs(
    client: TestClient, tokens: dict[str, str], namespace: str, queued: str
) -> None:
    listed = client.get("/api/v1/clusterqueues", headers=auth(tokens["reader"]))
    assert listed.status_code == 200, listed.text
    mine = next(q for q in listed.json()["items"] if q["name"] == queued)
    assert (mine["cohort"], mine["strategy"]) == ("research", "BestEffortFIFO")
    gpus = next(r for r in mine["resources"] if r["name"] == "nvidia.com/gpu")
    assert (gpus["nominal"], gpus["reserved"]) == (16, 8)
    assert (mine["admittedJobs"], mine["pendingJobs"]) == (1, 2)

    detail = client.get(f"/api/v1/clusterqueues/{queued}", headers=auth(tokens["reader"]))
    assert detail.status_code == 200, detail.text
    pending = detail.json()["pending"]
    assert [(p["name"], p["position"], p["reason"]) for p in pending] == [
        ("first", 1, "WaitingForQuota"),
        ("second", 2, "WaitingForQuota"),
    ]
    assert pending[1]["message"] == "needs 16 GPUs; 8 free"
    assert all(p["namespace"] == namespace for p in pending)

    # May read the queue, not this namespace's jobs: counted, not named.
    hidden = client.get(f"/api/v1/clusterqueues/{queued}", headers=auth(tokens["outsider"]))
    assert hidden.status_code == 200
    assert (hidden.json()["pendingJobs"], hidden.json()["pending"]) == (2, [])
    assert client.get("/api/v1/clusterqueues", headers=auth(tokens["nobody"])).status_code == 403

    missing = client.get("/api/v1/clusterqueues/no-such-queue", headers=auth(tokens["reader"]))
    assert missing.status_code == 404
    assert "ClusterQueue no-such-queue not found" in missing.json()["detail"]["message"]


def test_the_kubernetes_backend_serves_a_namespace_s_local_queues(
    client: TestClient, tokens: dict[str, str], namespace: str, queued: str
) -> None:
    url = f"/api/v1/namespaces/{namespace}/localqueues"
    resp = client.get(url, headers=auth(tokens["reader"]))
    assert resp.status_code == 200, resp.text
    # No status written yet: counted from the namespace's jobs.
    assert resp.json()["items"] == [
        {
            "namespace": namespace,
            "name": "training",
            "clusterQueue": queued,
            "stopPolicy": "None",
            "pendingJobs": 2,
            "admittedJobs": 1,
        }
    ]
    assert client.get(url, headers=auth(tokens["outsider"])).status_code == 403


def test_kubectl_shows_the_queue_columns(
    k8s_cluster: TestCluster, namespace: str, queued: str
) -> None:
    cq = k8s_cluster.kubectl("get", "clusterqueue", queued).stdout.splitlines()
    header, row = cq[0].split(), cq[1].split()
    assert header[:7] == ["NAME", "COHORT", "STRATEGY", "GPUS", "RESERVED", "ADMITTED", "PENDING"]
    assert row[:6] == [queued, "research", "BestEffortFIFO", "8", "1", "2"]
    lq = k8s_cluster.kubectl("get", "localqueue", "-n", namespace).stdout.split()
    # No status yet: the counts print empty.
    assert lq == ["NAME", "CLUSTERQUEUE", "PENDING", "ADMITTED", "training", queued]
    jobs = k8s_cluster.kubectl("get", "tj", "-n", namespace, "first").stdout.splitlines()
    assert jobs[0].split()[-4:] == ["QUEUE", "REASON", "ADMITTED", "AGE"]
    # No reconcile has run here, so the Admitted condition (and its column) is still empty.
    assert jobs[1].split()[-3:-1] == ["training", "WaitingForQuota"]
