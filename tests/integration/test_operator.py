"""The TrainingJob operator on a real control plane (kube-apiserver, scheduler, KCM, kwok).

Each test runs its own `python -m carina.operators` subprocess, watching only the test's
namespace, so killing it is as real as it gets. kwok plays the kubelet: bound pods become
Running at once, and a pod annotated carina.dev/simulate-exit-code exits with that code.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from builders import make_job
from operator_process import OperatorProcess

from carina.testcluster import (
    SIMULATE_EXIT_CODE_ANNOTATION,
    SIMULATE_EXIT_MESSAGE_ANNOTATION,
    TestCluster,
)
from carina.testcluster.processes import wait_until
from carina.workloads.contract import WorkerContext

pytestmark = pytest.mark.k8s

TIMEOUT = 60


# -- helpers --------------------------------------------------------------------------------


def manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    job = make_job(name).with_spec(**spec)
    job["metadata"]["namespace"] = namespace
    return dict(job)


def gpu_job(name: str, namespace: str, cluster: str = "vela", replicas: int = 2, **spec: Any):
    policy = {"backoffSeconds": 0, **spec.pop("failurePolicy", {})}
    return manifest(
        name,
        namespace,
        replicas=replicas,
        cluster=cluster,
        resources={"gpus": 8, "cpu": "1", "memory": "1Gi"},
        failurePolicy=policy,
        **spec,
    )


def cpu_job(name: str, namespace: str, replicas: int = 1, **spec: Any):
    policy = {"backoffSeconds": 0, **spec.pop("failurePolicy", {})}
    return manifest(
        name,
        namespace,
        replicas=replicas,
        resources={"cpu": "10m", "memory": "16Mi"},
        failurePolicy=policy,
        **spec,
    )


def apply(cluster: TestCluster, *objects: dict[str, Any]) -> None:
    cluster.apply(objects, server_side=False)


def job_status(cluster: TestCluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.get_json("trainingjob", name, "-n", ns).get("status") or {}


def pods(cluster: TestCluster, ns: str, job: str) -> list[dict[str, Any]]:
    items = cluster.get_json("pods", "-n", ns, "-l", f"carina.dev/job={job}")["items"]
    return sorted(items, key=lambda p: p["metadata"]["name"])


def wait_phase(
    cluster: TestCluster,
    ns: str,
    name: str,
    phase: str,
    op: OperatorProcess,
    timeout: float = TIMEOUT,
    **fields: Any,
) -> dict[str, Any]:
    """Wait until the job's status.phase (and any given top-level fields) match; returns status."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.clear()
        seen.update(job_status(cluster, ns, name))
        return seen.get("phase") == phase and all(seen.get(k) == v for k, v in fields.items())

    try:
        wait_until(check, timeout, f"{name} {phase} {fields}", interval=0.2, alive=op._alive)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(seen)}\n{op.log_tail()}") from None
    return dict(seen)


def running_pods(cluster: TestCluster, ns: str, job: str, restart: int) -> list[dict[str, Any]]:
    return [
        p
        for p in pods(cluster, ns, job)
        if p["status"].get("phase") == "Running"
        and p["metadata"]["labels"]["carina.dev/restart"] == str(restart)
        and not p["metadata"].get("deletionTimestamp")
    ]


def exit_worker(cluster: TestCluster, ns: str, pod: str, code: int, message: str = "") -> None:
    args = [f"{SIMULATE_EXIT_CODE_ANNOTATION}={code}"]
    if message:
        args.append(f"{SIMULATE_EXIT_MESSAGE_ANNOTATION}={message}")
    cluster.kubectl("annotate", "pod", pod, "-n", ns, "--overwrite", *args)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["vela", "blue-vela"])
def test_apply_runs_every_worker_on_its_pool(k8s_cluster, namespace, operator, profile):
    apply(k8s_cluster, gpu_job("llm", namespace, cluster=profile))
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    assert status["workers"] == {"total": 2, "ready": 2, "succeeded": 0, "failed": 0}
    assert condition(status, "WorkersReady")["status"] == "True"
    workers = pods(k8s_cluster, namespace, "llm")
    assert [p["metadata"]["name"] for p in workers] == ["llm-worker-0-r0", "llm-worker-1-r0"]
    nodes = {n["metadata"]["name"]: n for n in k8s_cluster.get_json("nodes")["items"]}
    for pod in workers:
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["labels"]["carina.dev/pool"] == profile
        assert env_of(pod)["MASTER_ADDR"] == f"llm-worker-0.llm.{namespace}.svc"
        assert pod["spec"]["hostname"] == pod["metadata"]["name"].removesuffix("-r0")
    uid = k8s_cluster.get_json("trainingjob", "llm", "-n", namespace)["metadata"]["uid"]
    owners = k8s_cluster.get_json("service", "llm", "-n", namespace)["metadata"]["ownerReferences"]
    assert owners[0]["uid"] == uid
    assert owners[0]["controller"] is True


def test_retryable_exit_restarts_the_gang_from_generation_one(k8s_cluster, namespace, operator):
    apply(k8s_cluster, gpu_job("llm", namespace, failurePolicy={"backoffSeconds": 2}))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    exit_worker(k8s_cluster, namespace, "llm-worker-1-r0", 1)
    restarting = wait_phase(k8s_cluster, namespace, "llm", "Restarting", operator)
    assert condition(restarting, "Restarting")["reason"] == "WorkerFailed"
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=1)
    assert status["restartsByReason"] == {"application": 1, "infrastructure": 0, "preemption": 0}
    workers = running_pods(k8s_cluster, namespace, "llm", restart=1)
    assert len(workers) == 2
    assert {env_of(p)["CARINA_RESTART"] for p in workers} == {"1"}
    reasons = {e["reason"] for e in k8s_cluster.get_json("events", "-n", namespace)["items"]}
    assert "WorkerFailed" in reasons


def test_a_failed_generation_keeps_its_pods_and_its_last_lines_until_the_next_restart(
    k8s_cluster, namespace, operator
):
    apply(k8s_cluster, cpu_job("llm", namespace, replicas=2, failurePolicy={"backoffSeconds": 3}))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    said = {"rank": 1, "exitCode": 1, "log": "step 41\nloading shard 9\nRuntimeError: NaN loss"}
    exit_worker(k8s_cluster, namespace, "llm-worker-1-r0", 1, json.dumps(said))
    restarting = condition(
        wait_phase(k8s_cluster, namespace, "llm", "Restarting", operator), "Restarting"
    )
    assert restarting["message"] == (
        "restart 1: worker 1 (rank 1) exited with code 1: "
        "step 41 | loading shard 9 | RuntimeError: NaN loss"
    )
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=1)
    by_name = {p["metadata"]["name"]: p for p in pods(k8s_cluster, namespace, "llm")}
    assert sorted(by_name) == ["llm-worker-0-r1", "llm-worker-1-r0", "llm-worker-1-r1"]
    assert by_name["llm-worker-1-r0"]["status"]["phase"] == "Failed"
    [kept] = by_name["llm-worker-1-r0"]["status"]["containerStatuses"]
    assert "NaN loss" in kept["state"]["terminated"]["message"]
    assert by_name["llm-worker-1-r0"]["spec"]["containers"][0]["terminationMessagePolicy"] == (
        "FallbackToLogsOnError"
    )
    events = k8s_cluster.get_json("events", "-n", namespace)["items"]
    assert any("RuntimeError: NaN loss" in e["message"] for e in events)

    # The entry process died: the kubelet's fallback puts the log's tail there as plain text.
    exit_worker(k8s_cluster, namespace, "llm-worker-0-r1", 139, "epoch 2\nSegmentation fault")
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=2)
    names = [p["metadata"]["name"] for p in pods(k8s_cluster, namespace, "llm")]
    assert names == ["llm-worker-0-r1", "llm-worker-0-r2", "llm-worker-1-r2"]
    events = k8s_cluster.get_json("events", "-n", namespace)["items"]
    assert any(
        e["message"] == "restart 2: worker 0 exited with code 139: epoch 2 | Segmentation fault"
        for e in events
    )

    k8s_cluster.kubectl("delete", "trainingjob", "llm", "-n", namespace, "--wait=false")
    wait_until(lambda: not pods(k8s_cluster, namespace, "llm"), TIMEOUT, "every pod deleted")


def test_permanent_exit_code_fails_the_job_and_stops_the_gang(k8s_cluster, namespace, operator):
    apply(k8s_cluster, gpu_job("llm", namespace))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    exit_worker(k8s_cluster, namespace, "llm-worker-0-r0", 65)
    status = wait_phase(k8s_cluster, namespace, "llm", "Failed", operator)
    failed = condition(status, "Failed")
    assert failed["reason"] == "PermanentExitCode"
    assert "code 65" in failed["message"]
    assert status["restarts"] == 0
    assert status.get("completionTime")
    wait_until(
        lambda: not running_pods(k8s_cluster, namespace, "llm", 0),
        TIMEOUT,
        "the other worker stopped",
    )


def test_max_restarts_exhausted_fails_the_job(k8s_cluster, namespace, operator):
    apply(k8s_cluster, cpu_job("llm", namespace, failurePolicy={"maxRestarts": 2}))
    for generation in range(3):
        wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=generation)
        exit_worker(k8s_cluster, namespace, f"llm-worker-0-r{generation}", 1)
    status = wait_phase(k8s_cluster, namespace, "llm", "Failed", operator)
    assert condition(status, "Failed")["reason"] == "MaxRestartsExceeded"
    assert status["restarts"] == 2
    assert status["restartsByReason"]["application"] == 2


def test_preemption_exit_records_the_checkpoint_and_counts_as_preemption(
    k8s_cluster, namespace, operator
):
    apply(k8s_cluster, cpu_job("llm", namespace, failurePolicy={"maxRestarts": 0}))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    ack = json.dumps({"checkpoint": {"step": 42, "uri": "s3://ckpt/llm/step-42"}})
    exit_worker(k8s_cluster, namespace, "llm-worker-0-r0", 75, ack)
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=1)
    assert status["restartsByReason"] == {"application": 0, "infrastructure": 0, "preemption": 1}
    assert status["lastCheckpoint"]["step"] == 42
    assert status["lastCheckpoint"]["uri"] == "s3://ckpt/llm/step-42"


def test_suspend_stops_workers_and_resume_restarts_them(k8s_cluster, namespace, operator):
    apply(k8s_cluster, gpu_job("llm", namespace))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    patch = lambda value: k8s_cluster.kubectl(  # noqa: E731
        "patch",
        "trainingjob",
        "llm",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": value}}),
    )
    patch(True)
    status = wait_phase(k8s_cluster, namespace, "llm", "Suspended", operator)
    assert condition(status, "Suspended")["status"] == "True"
    wait_until(lambda: not pods(k8s_cluster, namespace, "llm"), TIMEOUT, "no worker pods")
    patch(False)
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    assert condition(status, "Suspended")["reason"] == "Resumed"
    assert status["restarts"] == 0
    assert len(running_pods(k8s_cluster, namespace, "llm", 0)) == 2


def test_deleting_the_job_removes_its_children(k8s_cluster, namespace, operator):
    apply(k8s_cluster, gpu_job("llm", namespace))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    k8s_cluster.kubectl("delete", "trainingjob", "llm", "-n", namespace, "--wait=false")

    def children() -> list[str]:
        out = k8s_cluster.kubectl(
            "get",
            "pods,services",
            "-n",
            namespace,
            "-l",
            "carina.dev/job=llm",
            "-o",
            "name",
        ).stdout
        return out.split()

    wait_until(lambda: children() == [], TIMEOUT, "pods and service deleted")


def test_operator_killed_mid_creation_leaves_exactly_n_workers(k8s_cluster, namespace, operator):
    replicas = 12
    operator.stop()
    slow = OperatorProcess(
        k8s_cluster, namespace, operator.log_path, CARINA_OPERATOR_API_THREADS="1"
    ).start()
    apply(k8s_cluster, cpu_job("llm", namespace, replicas=replicas))
    wait_until(
        lambda: len(pods(k8s_cluster, namespace, "llm")) >= 1,
        TIMEOUT,
        "first worker",
        interval=0.02,
    )
    slow.kill()
    at_kill = len(pods(k8s_cluster, namespace, "llm"))
    print(f"workers when the operator died: {at_kill}/{replicas}")
    operator.start()
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    workers = pods(k8s_cluster, namespace, "llm")
    assert sorted(p["metadata"]["name"] for p in workers) == sorted(
        f"llm-worker-{i}-r0" for i in range(replicas)
    )
    assert status["restarts"] == 0


def test_operator_killed_during_a_restart_counts_it_once(k8s_cluster, namespace, operator):
    apply(k8s_cluster, gpu_job("llm", namespace, failurePolicy={"backoffSeconds": 3}))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    exit_worker(k8s_cluster, namespace, "llm-worker-0-r0", 1)
    wait_phase(k8s_cluster, namespace, "llm", "Restarting", operator)
    operator.kill()
    operator.start()
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=1)
    assert status["restartsByReason"]["application"] == 1
    names = [p["metadata"]["name"] for p in pods(k8s_cluster, namespace, "llm")]
    assert names == ["llm-worker-0-r0", "llm-worker-0-r1", "llm-worker-1-r1"]


def test_fifty_jobs_applied_at_once_all_run(k8s_cluster, namespace, operator):
    names = [f"job-{i:02d}" for i in range(50)]
    apply(k8s_cluster, *(cpu_job(n, namespace) for n in names))

    def all_running() -> bool:
        items = k8s_cluster.get_json("trainingjobs", "-n", namespace)["items"]
        return sum((j.get("status") or {}).get("phase") == "Running" for j in items) == 50

    wait_until(all_running, 120, "50 jobs Running", interval=0.5, alive=operator._alive)
    assert len(k8s_cluster.get_json("pods", "-n", namespace)["items"]) == 50
    assert f'carina_job_start_seconds_count{{namespace="{namespace}"}} 50.0' in operator.metrics()


def test_kubectl_get_shows_the_printer_columns(k8s_cluster, namespace, operator):
    apply(k8s_cluster, gpu_job("llm", namespace))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    out = k8s_cluster.kubectl("get", "tj", "-n", namespace).stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "PHASE",
        "WORKLOAD",
        "READY",
        "WORKERS",
        "STEP",
        "LOSS",
        "STAGE",
        "RESTARTS",
        "QUEUE",
        "REASON",
        "ADMITTED",
        "AGE",
    ]
    assert out[1].split()[:5] == ["llm", "Running", "pretrain", "2", "2"]


class _Metrics(http.server.BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_progress_and_every_checkpoint_come_from_rank_zero_metrics(
    k8s_cluster, namespace, operator, tmp_path
):
    # kwok's pod IPs lead nowhere: point the scraper at a local stand-in for rank 0.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    _Metrics.text = (
        'carina_worker_step{job="llm",namespace="%s",rank="0"} 37\n'
        'carina_worker_total_steps{job="llm",namespace="%s",rank="0"} 100\n'
        'carina_worker_loss{job="llm",namespace="%s",rank="0"} 3.25\n'
        'carina_checkpoint_last_step{job="llm",namespace="%s",rank="0"} 30\n' % ((namespace,) * 4)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    operator.stop()
    url = f"http://127.0.0.1:{server.server_address[1]}/{{namespace}}/{{job}}/metrics"
    scraper = OperatorProcess(
        k8s_cluster,
        namespace,
        tmp_path / "scraper.log",
        CARINA_OPERATOR_PROGRESS_INTERVAL="0.3",
        CARINA_OPERATOR_PROGRESS_URL=url,
    ).start()
    try:
        apply(k8s_cluster, cpu_job("llm", namespace))
        status = {}

        def has_progress() -> bool:
            status.update(job_status(k8s_cluster, namespace, "llm"))
            return (status.get("progress") or {}).get("step") == 37

        wait_until(has_progress, TIMEOUT, "progress step 37", alive=scraper._alive)
        assert status["progress"]["totalSteps"] == 100
        assert status["progress"]["loss"] == 3.25
        # A periodic save, not a preemption acknowledgement: it reaches status too.
        wait_until(
            lambda: job_status(k8s_cluster, namespace, "llm").get("lastCheckpoint"),
            TIMEOUT,
            "lastCheckpoint",
            alive=scraper._alive,
        )
        saved = job_status(k8s_cluster, namespace, "llm")["lastCheckpoint"]
        assert saved["step"] == 30
        assert saved["time"]
        assert saved["uri"] == f"s3://carina-checkpoints/{namespace}/llm/step-00000030"
        row = k8s_cluster.kubectl("get", "tj", "llm", "-n", namespace, "--no-headers").stdout
        assert row.split()[5:7] == ["37", "3.25"]
    finally:
        scraper.stop()
        server.shutdown()
        print(scraper.log_tail())


@pytest.fixture
def fast_node_failure(k8s_cluster, namespace, tmp_path) -> Iterator[OperatorProcess]:
    """An operator whose workers leave a NotReady node after 1 s instead of 60."""
    op = OperatorProcess(
        k8s_cluster, namespace, tmp_path / "operator.log", CARINA_OPERATOR_NODE_FAILURE_SECONDS="1"
    ).start()
    try:
        yield op
    finally:
        op.stop()
        print(f"--- operator log (tail)\n{op.log_tail()}")


def test_node_failure_restarts_the_gang_as_infrastructure(
    k8s_cluster, namespace, fast_node_failure
):
    op = fast_node_failure
    apply(k8s_cluster, gpu_job("llm", namespace, replicas=1, failurePolicy={"maxRestarts": 0}))
    wait_phase(k8s_cluster, namespace, "llm", "Running", op)
    node = pods(k8s_cluster, namespace, "llm")[0]["spec"]["nodeName"]
    k8s_cluster.set_node_ready(node, False)
    try:
        # The node lifecycle controller taints the node; the taint evicts the worker after its
        # 1 s toleration; the gang restarts on the pool's other node.
        status = wait_phase(k8s_cluster, namespace, "llm", "Running", op, timeout=90, restarts=1)
        assert status["restartsByReason"] == {
            "application": 0,
            "infrastructure": 1,
            "preemption": 0,
        }
        events = k8s_cluster.get_json("events", "-n", namespace)["items"]
        assert "NodeFailure" in {e["reason"] for e in events}
        [worker] = running_pods(k8s_cluster, namespace, "llm", 1)
        assert worker["spec"]["nodeName"] != node
    finally:
        k8s_cluster.set_node_ready(node, True)
        wait_until(
            lambda: (
                not any(
                    t["key"].startswith("node.kubernetes.io/")
                    for t in k8s_cluster.get_json("node", node)["spec"].get("taints", [])
                )
            ),
            60,
            f"{node} ready and untainted again",
        )


def test_all_workers_succeeding_finishes_the_job_and_its_ttl_deletes_it(
    k8s_cluster, namespace, operator
):
    apply(k8s_cluster, cpu_job("llm", namespace, replicas=2, ttlSecondsAfterFinished=2))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    for i in range(2):
        exit_worker(k8s_cluster, namespace, f"llm-worker-{i}-r0", 0)
    status = wait_phase(k8s_cluster, namespace, "llm", "Succeeded", operator)
    assert condition(status, "Succeeded")["status"] == "True"
    assert status.get("completionTime")

    def gone() -> bool:
        out = k8s_cluster.kubectl("get", "trainingjobs", "-n", namespace, "-o", "name").stdout
        return out.strip() == ""

    wait_until(gone, TIMEOUT, "the job deleted after its TTL", alive=operator._alive)


def test_active_deadline_fails_a_running_job(k8s_cluster, namespace, operator):
    apply(k8s_cluster, cpu_job("llm", namespace, activeDeadlineSeconds=3))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    status = wait_phase(k8s_cluster, namespace, "llm", "Failed", operator)
    assert condition(status, "Failed")["reason"] == "DeadlineExceeded"
    wait_until(
        lambda: not running_pods(k8s_cluster, namespace, "llm", 0), TIMEOUT, "the worker stopped"
    )


def patch_spec(cluster: TestCluster, ns: str, name: str, **spec: Any) -> None:
    cluster.kubectl(
        "patch", "trainingjob", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def test_a_ttl_set_on_a_finished_job_deletes_it(k8s_cluster, namespace, operator):
    apply(k8s_cluster, cpu_job("llm", namespace))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    exit_worker(k8s_cluster, namespace, "llm-worker-0-r0", 0)
    wait_phase(k8s_cluster, namespace, "llm", "Succeeded", operator)
    patch_spec(k8s_cluster, namespace, "llm", ttlSecondsAfterFinished=1)

    def gone() -> bool:
        out = k8s_cluster.kubectl("get", "trainingjobs", "-n", namespace, "-o", "name").stdout
        return out.strip() == ""

    wait_until(gone, TIMEOUT, "the job deleted after its new TTL", alive=operator._alive)


def test_a_deadline_shortened_on_a_running_job_fails_it(k8s_cluster, namespace, operator):
    apply(k8s_cluster, cpu_job("llm", namespace, activeDeadlineSeconds=3600))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    patch_spec(k8s_cluster, namespace, "llm", activeDeadlineSeconds=1)
    status = wait_phase(k8s_cluster, namespace, "llm", "Failed", operator)
    assert condition(status, "Failed")["reason"] == "DeadlineExceeded"
    wait_until(
        lambda: not running_pods(k8s_cluster, namespace, "llm", 0), TIMEOUT, "the worker stopped"
    )


def test_replicas_changed_while_suspended_start_at_resume_with_the_new_world_size(
    k8s_cluster, namespace, operator
):
    apply(k8s_cluster, gpu_job("llm", namespace, replicas=1))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    refused = k8s_cluster.kubectl(
        "patch", "trainingjob", "llm", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"replicas": 2}}), check=False,
    )  # fmt: skip
    assert refused.returncode != 0, "resized while running"
    assert "spec.replicas" in refused.stderr, refused.stderr
    patch_spec(k8s_cluster, namespace, "llm", suspend=True)
    wait_phase(k8s_cluster, namespace, "llm", "Suspended", operator)
    wait_until(lambda: not pods(k8s_cluster, namespace, "llm"), TIMEOUT, "no worker pods")
    patch_spec(k8s_cluster, namespace, "llm", replicas=2)
    patch_spec(k8s_cluster, namespace, "llm", suspend=False)
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    workers = running_pods(k8s_cluster, namespace, "llm", 0)
    assert len(workers) == 2
    world = {WorkerContext.from_env(env_of(p)).world_size for p in workers}
    assert world == {16}  # two workers of eight GPUs


def test_two_workers_of_four_gpus_are_ranks_0_to_3_and_4_to_7_of_world_8(
    k8s_cluster, namespace, operator
):
    job = manifest(
        "wide",
        namespace,
        replicas=2,
        cluster="vela",
        resources={"gpus": 4, "cpu": "1", "memory": "1Gi"},
    )
    apply(k8s_cluster, job)
    wait_phase(k8s_cluster, namespace, "wide", "Running", operator)
    workers = sorted(
        pods(k8s_cluster, namespace, "wide"),
        key=lambda p: int(p["metadata"]["labels"]["carina.dev/index"]),
    )
    assert len(workers) == 2
    ranks = []
    for pod in workers:
        container = pod["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", "carina.workloads.supervisor"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        ctx = WorkerContext.from_env(env_of(pod))
        assert ctx.world_size == 8
        assert ctx.local_world_size == 4
        ranks.append([ctx.for_rank(i).rank for i in range(ctx.local_world_size)])
    assert ranks == [[0, 1, 2, 3], [4, 5, 6, 7]]


def _refused_creates(op: OperatorProcess) -> float:
    line = next(
        (
            line
            for line in op.metrics().splitlines()
            if line.startswith("carina_operator_kube_requests_total{")
            and 'verb="create"' in line
            and 'resource="pods"' in line
            and 'code="422"' in line
        ),
        None,
    )
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_a_worker_pod_the_api_server_refuses_fails_the_job_instead_of_retrying(
    k8s_cluster, namespace, operator
):
    # The CRD keeps an env var's valueFrom as written; the API server checks it in the pod.
    env = [{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nowhere"}}}]
    apply(k8s_cluster, cpu_job("llm", namespace, replicas=2, template={"spec": {"env": env}}))
    status = wait_phase(k8s_cluster, namespace, "llm", "Failed", operator)
    failed = condition(status, "Failed")
    assert failed["reason"] == "WorkersRefused"
    assert "llm-worker-" in failed["message"]
    assert "fieldPath" in failed["message"]
    assert not pods(k8s_cluster, namespace, "llm")
    refused = _refused_creates(operator)
    assert refused == 2  # one try per worker, then no more
    time.sleep(3)
    assert _refused_creates(operator) == refused
    reasons = [
        e["reason"]
        for e in k8s_cluster.get_json("events", "-n", namespace)["items"]
        if e["involvedObject"].get("name") == "llm"
    ]
    assert "WorkersRefused" in reasons


def test_a_template_label_key_kubernetes_refuses_fails_the_job_as_invalid(
    k8s_cluster, namespace, operator
):
    # The CRD cannot check a map's keys, so the API server stores the job; the operator's
    # models refuse it before any pod is sent.
    template = {"metadata": {"labels": {"team a": "x"}}}
    apply(k8s_cluster, cpu_job("llm", namespace, template=template))
    status = wait_phase(k8s_cluster, namespace, "llm", "Failed", operator)
    failed = condition(status, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.template.metadata.labels" in failed["message"]
    assert "team a" in failed["message"]
    assert not pods(k8s_cluster, namespace, "llm")
