"""Shared quota on a real control plane: two teams in one cohort, borrowing and reclaiming.

The operator runs as a process against kube-apiserver with kwok's fake A100 nodes (two nodes
of 8 GPUs). Team A's ClusterQueue and team B's each have 8 GPUs of nominal quota in one
cohort. A worker pod annotated carina.dev/simulate-sigterm-message answers its deletion as a
worker that saves on SIGTERM does: it exits 75 with that checkpoint acknowledgement.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_operator import (
    TIMEOUT,
    OperatorProcess,
    apply,
    condition,
    gpu_job,
    job_status,
    pods,
    running_pods,
    wait_phase,
)

from carina.testcluster import SIMULATE_SIGTERM_MESSAGE_ANNOTATION, TestCluster
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s


@pytest.fixture
def teams(k8s_cluster: TestCluster, namespace: str) -> Iterator[tuple[str, str, str]]:
    """Two namespaces (team A is the test's own), and a suffix for cluster-scoped names."""
    tag = uuid.uuid4().hex[:6]
    team_b = f"team-b-{tag}"
    k8s_cluster.kubectl("create", "namespace", team_b)
    wait_until(
        lambda: (
            k8s_cluster.kubectl("get", "sa", "default", "-n", team_b, check=False).returncode == 0
        ),
        30,
        "default service account",
    )
    try:
        yield namespace, team_b, tag
    finally:
        k8s_cluster.kubectl("delete", "namespace", team_b, "--wait=false", check=False)
        for kind in ("clusterqueue", "trainingpriorityclass"):
            k8s_cluster.kubectl(
                "delete", kind, "-l", f"carina.dev/test={tag}", "--wait=false", check=False
            )


def queues(team_a: str, team_b: str, tag: str) -> list[dict[str, Any]]:
    def cq(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "ClusterQueue",
            "metadata": {"name": f"{name}-{tag}", "labels": {"carina.dev/test": tag}},
            "spec": {
                "cohort": f"research-{tag}",
                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}],
                "preemption": {
                    "withinClusterQueue": "LowerPriority",
                    "reclaimWithinCohort": "Any",
                },
            },
        }

    def lq(ns: str, cq_name: str) -> dict[str, Any]:
        return {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "LocalQueue",
            "metadata": {"name": "default", "namespace": ns},
            "spec": {"clusterQueue": f"{cq_name}-{tag}"},
        }

    urgent = {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "TrainingPriorityClass",
        "metadata": {"name": f"urgent-{tag}", "labels": {"carina.dev/test": tag}},
        "value": 1000,
        "description": "production runs",
    }
    return [cq("team-a"), cq("team-b"), lq(team_a, "team-a"), lq(team_b, "team-b"), urgent]


def start_operator(cluster: TestCluster, team_a: str, team_b: str, log: Path) -> OperatorProcess:
    return OperatorProcess(
        cluster,
        team_a,
        log,
        CARINA_OPERATOR_NAMESPACES=f"{team_a},{team_b}",
        CARINA_OPERATOR_ADMISSION_INTERVAL="0.3",
        CARINA_OPERATOR_LEASE_NAMESPACE=team_a,
    ).start()


def queueing(cluster: TestCluster, ns: str, name: str) -> dict[str, Any]:
    return job_status(cluster, ns, name).get("queueing") or {}


def wait_queueing(
    cluster: TestCluster, ns: str, name: str, reason: str, op: OperatorProcess
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.clear()
        seen.update(queueing(cluster, ns, name))
        return seen.get("reason") == reason

    try:
        wait_until(check, TIMEOUT, f"{name} {reason}", interval=0.2, alive=op._alive)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last: {json.dumps(seen)}\n{op.log_tail()}") from None
    return dict(seen)


def reserved(cluster: TestCluster, cq: str) -> float:
    status = cluster.get_json("clusterqueue", cq).get("status") or {}
    return sum(r["reserved"] for r in status.get("resources", []) if r["name"] == "nvidia.com/gpu")


def test_a_borrower_is_reclaimed_with_a_checkpoint_and_resumes_after(k8s_cluster, teams, tmp_path):
    team_a, team_b, tag = teams
    apply(k8s_cluster, *queues(team_a, team_b, tag))
    op = start_operator(k8s_cluster, team_a, team_b, tmp_path / "operator.log")
    try:
        # Team A's job needs 16 GPUs: its own 8 and team B's idle 8.
        apply(k8s_cluster, gpu_job("big", team_a, replicas=2, queue="default"))
        status = wait_phase(k8s_cluster, team_a, "big", "Running", op)
        q = status["queueing"]
        assert q["admission"]["clusterQueue"] == f"team-a-{tag}"
        assert q["admission"]["borrowing"] is True
        wait_until(lambda: reserved(k8s_cluster, f"team-a-{tag}") == 16, TIMEOUT, "usage")
        ack = json.dumps({"checkpoint": {"step": 42, "uri": "s3://ckpt/big/step-00000042"}})
        for pod in pods(k8s_cluster, team_a, "big"):
            said = ack if pod["metadata"]["name"].endswith("-0-r0") else "{}"
            k8s_cluster.kubectl(
                "annotate",
                "pod",
                pod["metadata"]["name"],
                "-n",
                team_a,
                f"{SIMULATE_SIGTERM_MESSAGE_ANNOTATION}={said}",
            )

        # Team B wants its quota back: the borrower is evicted, saves, and leaves.
        apply(
            k8s_cluster,
            gpu_job(
                "urgent",
                team_b,
                replicas=1,
                queue="default",
                priorityClassName=f"urgent-{tag}",
            ),
        )
        status = wait_phase(k8s_cluster, team_a, "big", "Queued", op)
        assert condition(status, "Admitted")["reason"] == "Preempted"
        q = wait_queueing(k8s_cluster, team_a, "big", "WaitingForQuota", op)
        assert {c["type"]: c["reason"] for c in q["conditions"]}["QuotaReserved"] in (
            "Requeued",
            "WaitingForQuota",
        )
        assert "needs 16 GPUs" in q["message"]
        status = job_status(k8s_cluster, team_a, "big")
        assert status["lastCheckpoint"]["step"] == 42
        assert condition(status, "Checkpointed")["reason"] == "CheckpointSaved"
        wait_until(lambda: not pods(k8s_cluster, team_a, "big"), TIMEOUT, "victim gone")

        # The preemptor runs on the freed GPUs.
        status = wait_phase(k8s_cluster, team_b, "urgent", "Running", op)
        assert status["queueing"]["priority"] == 1000
        assert len(running_pods(k8s_cluster, team_b, "urgent", 0)) == 1

        # It finishes (deleted here): the victim is admitted again and resumes from step 42.
        k8s_cluster.kubectl("delete", "trainingjob", "urgent", "-n", team_b)
        status = wait_phase(k8s_cluster, team_a, "big", "Running", op)
        assert status["lastCheckpoint"]["step"] == 42
        assert status["queueing"]["reason"] in ("QuotaReserved", "WaitingForPodsReady")
        events = k8s_cluster.get_json(
            "events", "-n", team_a, "--field-selector", "involvedObject.name=big"
        )["items"]
        reasons = [e["reason"] for e in events]
        assert "Preempted" in reasons
        assert "CheckpointSaved" in reasons
        scraped = op.metrics()
        cq_a = f'cluster_queue="team-a-{tag}"'
        assert f'carina_queue_checkpoint_acks_total{{{cq_a},result="saved"}} 1.0' in scraped
        assert f'carina_queue_evictions_total{{{cq_a},reason="Preempted"}} 1.0' in scraped
        assert f'carina_queue_nominal_quota{{{cq_a},resource="nvidia.com/gpu"}} 8.0' in scraped
        assert any(
            line.startswith("carina_job_gpu_seconds{") and 'account="allocated"' in line
            for line in scraped.splitlines()
        )
    finally:
        op.stop()
        print(f"--- operator log (tail)\n{op.log_tail()}")


def test_a_restarted_operator_rebuilds_usage_and_admits_nothing_twice(k8s_cluster, teams, tmp_path):
    team_a, team_b, tag = teams
    apply(k8s_cluster, *queues(team_a, team_b, tag))
    log = tmp_path / "operator.log"
    op = start_operator(k8s_cluster, team_a, team_b, log)
    apply(k8s_cluster, gpu_job("first", team_a, replicas=2, queue="default"))
    wait_phase(k8s_cluster, team_a, "first", "Running", op)
    op.kill()  # mid-flight: no cleanup
    apply(k8s_cluster, gpu_job("second", team_b, replicas=1, queue="default"))
    op = start_operator(k8s_cluster, team_a, team_b, log)
    try:
        # Same priority, and reclaim takes only from a borrower: "second" is entitled to its
        # nominal 8 GPUs, so "first" (borrowing) is preempted; never both admitted at once.
        q = wait_queueing(k8s_cluster, team_b, "second", "QuotaReserved", op)
        assert q["admission"]["usage"]["nvidia.com/gpu"] == 8
        first = queueing(k8s_cluster, team_a, "first")
        assert first.get("admission") is None
        total = reserved(k8s_cluster, f"team-a-{tag}") + reserved(k8s_cluster, f"team-b-{tag}")
        assert total <= 16
    finally:
        op.stop()


def test_of_two_operator_replicas_one_writes_admissions(k8s_cluster, teams, tmp_path):
    team_a, team_b, tag = teams
    apply(k8s_cluster, *queues(team_a, team_b, tag))
    one = start_operator(k8s_cluster, team_a, team_b, tmp_path / "one.log")
    two = start_operator(k8s_cluster, team_a, team_b, tmp_path / "two.log")
    try:
        for i in range(3):
            apply(k8s_cluster, gpu_job(f"job-{i}", team_a, replicas=1, queue="default"))
        wait_phase(k8s_cluster, team_a, "job-0", "Running", one)
        wait_queueing(k8s_cluster, team_a, "job-2", "WaitingForQuota", one)
        lease = k8s_cluster.get_json("lease", "carina-admission", "-n", team_a)
        holder = lease["spec"]["holderIdentity"]
        assert holder
        admitted = [
            n
            for n in ("job-0", "job-1", "job-2")
            if queueing(k8s_cluster, team_a, n).get("admission")
        ]
        assert len(admitted) == 2  # 16 GPUs: its own 8 and team B's idle 8
        assert reserved(k8s_cluster, f"team-a-{tag}") == 16
        # The holder stops: the other replica takes the lease over and goes on deciding.
        assert one.proc is not None
        holder_op, other = (one, two) if holder.endswith(f"-{one.proc.pid}") else (two, one)
        holder_op.stop()
        wait_until(
            lambda: (
                k8s_cluster.get_json("lease", "carina-admission", "-n", team_a)["spec"][
                    "holderIdentity"
                ]
                != holder
            ),
            TIMEOUT,
            "lease taken over",
        )
        k8s_cluster.kubectl("delete", "trainingjob", admitted[0], "-n", team_a)
        wait_queueing(k8s_cluster, team_a, "job-2", "QuotaReserved", other)
    finally:
        one.stop()
        two.stop()


def kube_requests(op: OperatorProcess) -> dict[str, float]:
    """The operator's API requests so far, by verb and resource."""
    counts: dict[str, float] = {}
    for line in op.metrics().splitlines():
        if line.startswith("carina_operator_kube_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels] = counts.get(labels, 0.0) + float(value)
    return counts


def test_a_cluster_queue_created_or_changed_after_start_is_acted_on(k8s_cluster, teams, tmp_path):
    team_a, _, tag = teams
    op = OperatorProcess(
        k8s_cluster,
        team_a,
        tmp_path / "operator.log",
        CARINA_OPERATOR_ADMISSION_INTERVAL="0.3",
        CARINA_OPERATOR_LEASE_NAMESPACE=team_a,
    ).start()
    try:
        # The queues appear only once the operator runs: it learns of them from its watches.
        small = {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "ClusterQueue",
            "metadata": {"name": f"small-{tag}", "labels": {"carina.dev/test": tag}},
            "spec": {"resources": [{"name": "nvidia.com/gpu", "nominalQuota": 4}]},
        }
        local = {
            "apiVersion": "carina.dev/v1alpha1",
            "kind": "LocalQueue",
            "metadata": {"name": "default", "namespace": team_a},
            "spec": {"clusterQueue": f"small-{tag}"},
        }
        apply(k8s_cluster, small, local)
        apply(k8s_cluster, gpu_job("wide", team_a, replicas=1, queue="default"))
        q = wait_queueing(k8s_cluster, team_a, "wide", "ExceedsMaxQuota", op)
        assert q["clusterQueue"] == f"small-{tag}"
        assert q.get("admission") is None
        # More quota: the pending job is admitted and runs.
        k8s_cluster.kubectl(
            "patch",
            "clusterqueue",
            f"small-{tag}",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}}),
        )
        q = wait_queueing(k8s_cluster, team_a, "wide", "QuotaReserved", op)
        assert q["admission"]["clusterQueue"] == f"small-{tag}"
        wait_phase(k8s_cluster, team_a, "wide", "Running", op)
        wait_until(lambda: reserved(k8s_cluster, f"small-{tag}") == 8, TIMEOUT, "usage")
    finally:
        op.stop()
        print(f"--- operator log (tail)\n{op.log_tail()}")


def test_an_idle_admission_writer_only_renews_its_lease(k8s_cluster, namespace, tmp_path):
    op = OperatorProcess(
        k8s_cluster,
        namespace,
        tmp_path / "operator.log",
        CARINA_OPERATOR_ADMISSION_INTERVAL="0.5",
        CARINA_OPERATOR_ADMISSION_LEASE_SECONDS="15",
        CARINA_OPERATOR_LEASE_NAMESPACE=namespace,
    ).start()
    try:
        # The first round takes the lease (and writes any ClusterQueue's usage once).
        wait_until(
            lambda: (
                k8s_cluster.kubectl(
                    "get", "lease", "carina-admission", "-n", namespace, check=False
                ).returncode
                == 0
            ),
            TIMEOUT,
            "lease taken",
        )
        time.sleep(2)
        before, start = kube_requests(op), time.monotonic()
        time.sleep(10)
        after, seconds = kube_requests(op), time.monotonic() - start
        grown = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
        total = sum(grown.values())
        print(f"idle operator: {total / seconds:.2f} requests/s over {seconds:.1f} s: {grown}")
        # Twenty rounds, and the holder renews once a third of its 15 s lease has passed.
        renewals = seconds / 5 + 1
        assert total <= renewals, grown
        assert set(grown) <= {k for k in grown if 'resource="leases"' in k}, grown
    finally:
        op.stop()
