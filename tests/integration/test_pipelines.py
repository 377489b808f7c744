"""Pipelines through the operator on a real control plane (kube-apiserver, scheduler, kwok).

A job that names another job's result (`job://<name>`) or lists it in spec.dependsOn gets no
pod until that job has Succeeded, and then reads its final checkpoint. kwok plays the
workers: a pod annotated carina.dev/simulate-exit-code exits with that code after
simulate-exit-delay, its termination message (simulate-exit-message) carrying the checkpoint
it saved, as a real worker's does.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from test_operator import (
    TIMEOUT,
    OperatorProcess,
    apply,
    condition,
    cpu_job,
    gpu_job,
    job_status,
    pods,
    wait_phase,
)

from carina.platform.planning.render import SPEC_ANNOTATION
from carina.testcluster import (
    SIMULATE_EXIT_CODE_ANNOTATION,
    SIMULATE_EXIT_DELAY_ANNOTATION,
    SIMULATE_EXIT_MESSAGE_ANNOTATION,
    TestCluster,
)
from carina.testcluster.processes import wait_until

TASKS = [{"name": "ppl", "kind": "perplexity", "data": {"generator": "python-stdlib"}}]
STEPS = 40


def saved_at(name: str) -> str:
    """Where a job's simulated worker says it saved its final checkpoint."""
    return f"s3://ckpt/{name}/step-{STEPS:08d}"


def job(
    name: str,
    namespace: str,
    workload: dict[str, Any] | None = None,
    code: int = 0,
    delay: str = "3s",
    **spec: Any,
) -> dict[str, Any]:
    """A one-worker job whose pod exits `code` after `delay`, as a worker that saved its
    final checkpoint at step 40 says it did."""
    manifest = cpu_job(name, namespace, template=exits(name, code, delay), **spec)
    if workload is not None:
        manifest["spec"]["workload"] = workload
    return manifest


def exits(name: str, code: int = 0, delay: str = "3s") -> dict[str, Any]:
    """The pod template of a worker that exits `code` after `delay`, its termination message
    naming the checkpoint it saved at step 40."""
    said = {
        "progress": {"step": STEPS, "totalSteps": STEPS},
        "checkpoint": {"step": STEPS, "uri": saved_at(name)},
    }
    annotations = {
        SIMULATE_EXIT_CODE_ANNOTATION: str(code),
        SIMULATE_EXIT_DELAY_ANNOTATION: delay,
        SIMULATE_EXIT_MESSAGE_ANNOTATION: json.dumps(said),
    }
    return {"metadata": {"annotations": annotations}}


def finetune(name: str, namespace: str, base: str, **kw: Any) -> dict[str, Any]:
    return job(name, namespace, {"finetune": {"base": base}}, **kw)


def evaluate(name: str, namespace: str, base: str, compare_to: str) -> dict[str, Any]:
    config = {"base": base, "compareTo": compare_to, "tasks": TASKS}
    return job(name, namespace, {"evaluate": config})


def admitted(cluster: TestCluster, ns: str, name: str) -> dict[str, Any]:
    status = job_status(cluster, ns, name)
    return next((c for c in status.get("conditions", []) if c["type"] == "Admitted"), {})


def wait_admitted(
    cluster: TestCluster, ns: str, name: str, reason: str, op: OperatorProcess, words: str = ""
) -> dict[str, Any]:
    """Wait until the job's Admitted condition has this reason and its message these words."""

    def said() -> bool:
        cond = admitted(cluster, ns, name)
        return cond.get("reason") == reason and words in cond.get("message", "")

    wait_until(said, TIMEOUT, f"{name} Admitted {reason} {words!r}", interval=0.2, alive=op._alive)
    return admitted(cluster, ns, name)


def test_a_pipeline_applied_at_once_runs_in_order_with_no_early_pods(
    k8s_cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    apply(
        k8s_cluster,
        job("pretrain", ns, delay="10s"),
        finetune("finetune", ns, "job://pretrain"),
        evaluate("evaluate", ns, "job://finetune", "job://pretrain"),
    )
    wait_phase(k8s_cluster, ns, "pretrain", "Running", operator)
    # The waiting reason names the upstream and follows its phase (messages are written at
    # most every few seconds).
    words = "waiting for job pretrain (Running"
    wait_admitted(k8s_cluster, ns, "finetune", "WaitingForUpstream", operator, words)
    table = k8s_cluster.kubectl("get", "tj", "-n", ns).stdout.splitlines()
    assert table[0].split()[-3:] == ["REASON", "ADMITTED", "AGE"]
    assert "WaitingForUpstream" in next(r for r in table if r.startswith("finetune "))

    # Poll the pod list the whole time the upstream runs: no downstream pod ever appears. Each
    # list is taken before the upstream is seen not to have Succeeded yet.
    while True:
        operator._alive()
        names = [p["metadata"]["name"] for p in k8s_cluster.get_json("pods", "-n", ns)["items"]]
        if job_status(k8s_cluster, ns, "pretrain").get("phase") == "Succeeded":
            break
        assert not [n for n in names if not n.startswith("pretrain-")], names

    final = {
        name: wait_phase(k8s_cluster, ns, name, "Succeeded", operator, timeout=90)
        for name in ("pretrain", "finetune", "evaluate")
    }
    assert [s["restarts"] for s in final.values()] == [0, 0, 0]
    assert final["finetune"]["inputs"] == [
        {
            "field": "spec.workload.finetune.base",
            "job": "pretrain",
            "uri": saved_at("pretrain"),
            "step": STEPS,
        }
    ]
    assert [(i["job"], i["uri"]) for i in final["evaluate"]["inputs"]] == [
        ("finetune", saved_at("finetune")),
        ("pretrain", saved_at("pretrain")),
    ]
    # The spec the worker reads holds URIs only.
    [evaluate_pod] = pods(k8s_cluster, ns, "evaluate")
    config = json.loads(evaluate_pod["metadata"]["annotations"][SPEC_ANNOTATION])["config"]
    assert (config["base"], config["compareTo"]) == (saved_at("finetune"), saved_at("pretrain"))
    # Each downstream pod was created no earlier than its upstream finished.
    [tuned_pod] = pods(k8s_cluster, ns, "finetune")
    assert tuned_pod["metadata"]["creationTimestamp"] >= final["pretrain"]["completionTime"][:19]


def test_an_upstream_failure_fails_its_dependents_naming_it(
    k8s_cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    apply(
        k8s_cluster,
        job("pretrain", ns, code=65, delay="1s"),
        finetune("finetune", ns, "job://pretrain"),
        evaluate("evaluate", ns, "job://finetune", "s3://ckpt/baseline"),
    )
    pre = wait_phase(k8s_cluster, ns, "pretrain", "Failed", operator)
    assert condition(pre, "Failed")["reason"] == "PermanentExitCode"
    tuned = wait_phase(k8s_cluster, ns, "finetune", "Failed", operator)
    assert condition(tuned, "Failed")["reason"] == "UpstreamFailed"
    assert condition(tuned, "Failed")["message"].startswith(
        "upstream job pretrain failed: PermanentExitCode"
    )
    evaluated = wait_phase(k8s_cluster, ns, "evaluate", "Failed", operator)
    assert condition(evaluated, "Failed")["message"].startswith(
        "upstream job finetune failed: UpstreamFailed"
    )
    assert not pods(k8s_cluster, ns, "finetune")
    assert not pods(k8s_cluster, ns, "evaluate")
    warnings = {
        (e["involvedObject"]["name"], e["reason"])
        for e in k8s_cluster.get_json("events", "-n", ns)["items"]
        if e["type"] == "Warning"
    }
    assert {("finetune", "UpstreamFailed"), ("evaluate", "UpstreamFailed")} <= warnings


def test_a_missing_upstream_is_waited_for_and_a_deleted_one_is_missing_again(
    k8s_cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    apply(k8s_cluster, finetune("finetune", ns, "job://pretrain"))
    missing = wait_admitted(k8s_cluster, ns, "finetune", "UpstreamMissing", operator)
    assert missing["message"] == "job pretrain does not exist (yet)"
    assert job_status(k8s_cluster, ns, "finetune")["phase"] == "Pending"

    # Created: the dependent is woken and waits for it to finish ...
    apply(k8s_cluster, job("pretrain", ns, delay="600s"))
    wait_phase(k8s_cluster, ns, "pretrain", "Running", operator)
    wait_admitted(k8s_cluster, ns, "finetune", "WaitingForUpstream", operator)
    # ... deleted before it finished: the dependent says so, and still has no pod.
    k8s_cluster.kubectl("delete", "tj", "pretrain", "-n", ns, "--wait=false")
    gone = wait_admitted(k8s_cluster, ns, "finetune", "UpstreamMissing", operator)
    assert gone["message"] == "job pretrain does not exist (yet)"
    assert not pods(k8s_cluster, ns, "finetune")

    # Created again, it runs; then the dependent does.
    apply(k8s_cluster, job("pretrain", ns, delay="1s"))
    done = wait_phase(k8s_cluster, ns, "finetune", "Succeeded", operator, timeout=90)
    assert done["inputs"][0]["uri"] == saved_at("pretrain")


def test_jobs_whose_dependencies_loop_fail_naming_the_loop(
    k8s_cluster: TestCluster, namespace: str, operator: OperatorProcess
) -> None:
    # kubectl talks to the API server, which sees one object at a time: the loop gets in.
    ns = namespace
    apply(
        k8s_cluster,
        finetune("a", ns, "job://b"),
        job("b", ns, dependsOn=["a"]),
        finetune("c", ns, "job://a"),
    )
    a = wait_phase(k8s_cluster, ns, "a", "Failed", operator)
    b = wait_phase(k8s_cluster, ns, "b", "Failed", operator)
    assert condition(a, "Failed")["reason"] == "DependencyCycle"
    assert condition(a, "Failed")["message"].endswith(": a -> b -> a")
    assert condition(b, "Failed")["message"].endswith(": b -> a -> b")
    # Below the loop, c fails because its upstream did.
    c = wait_phase(k8s_cluster, ns, "c", "Failed", operator)
    assert condition(c, "Failed")["reason"] == "UpstreamFailed"
    assert not pods(k8s_cluster, ns, "a") + pods(k8s_cluster, ns, "b") + pods(k8s_cluster, ns, "c")


def test_a_queued_job_waiting_for_its_upstream_takes_no_quota(
    k8s_cluster: TestCluster, namespace: str, tmp_path: Path
) -> None:
    ns, tag = namespace, uuid.uuid4().hex[:6]
    cq = f"pipeline-{tag}"
    quota = {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "ClusterQueue",
        "metadata": {"name": cq, "labels": {"carina.dev/test": tag}},
        "spec": {"resources": [{"name": "nvidia.com/gpu", "nominalQuota": 16}]},
    }
    local = {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "LocalQueue",
        "metadata": {"name": "default", "namespace": ns},
        "spec": {"clusterQueue": cq},
    }
    apply(k8s_cluster, quota, local)
    op = OperatorProcess(
        k8s_cluster,
        ns,
        tmp_path / "operator.log",
        CARINA_OPERATOR_ADMISSION_INTERVAL="0.3",
        CARINA_OPERATOR_LEASE_NAMESPACE=ns,
    ).start()
    try:
        # Room for both gangs (8 GPUs each): only the dependency keeps the second one out.
        upstream = gpu_job(
            "pretrain", ns, replicas=1, queue="default", template=exits("pretrain", delay="8s")
        )
        downstream = gpu_job(
            "finetune", ns, replicas=1, queue="default", template=exits("finetune", delay="5s")
        )
        downstream["spec"]["workload"] = {"finetune": {"base": "job://pretrain"}}
        apply(k8s_cluster, upstream, downstream)
        wait_phase(k8s_cluster, ns, "pretrain", "Running", op)
        wait_admitted(k8s_cluster, ns, "finetune", "WaitingForUpstream", op)
        while True:  # each look taken before the upstream is seen still unfinished
            op._alive()
            waiting = job_status(k8s_cluster, ns, "finetune")
            cq_status = k8s_cluster.get_json("clusterqueue", cq).get("status") or {}
            if job_status(k8s_cluster, ns, "pretrain").get("phase") == "Succeeded":
                break
            assert (waiting.get("queueing") or {}).get("admission") is None, waiting
            assert cq_status.get("admittedJobs", 0) <= 1, cq_status
        # Its upstream done, it holds quota like any job of the queue, and runs.
        running = wait_phase(k8s_cluster, ns, "finetune", "Running", op, timeout=90)
        assert running["queueing"]["admission"]["clusterQueue"] == cq
        done = wait_phase(k8s_cluster, ns, "finetune", "Succeeded", op, timeout=90)
        assert done["restarts"] == 0
    finally:
        op.stop()
        print(f"--- operator log (tail)\n{op.log_tail()}")
        k8s_cluster.kubectl("delete", "clusterqueue", cq, "--wait=false", check=False)
