"""A node turns EVICT under a running gang: how soon it runs again elsewhere, and what is lost.

    .venv/bin/python bench/node_health_recovery.py [--trials 5] [--workers 2]
        [--step-seconds 1.0] [--intervals 50,200,1000]

Starts the test control plane with six fake 8-GPU Vela nodes (kwok) and one operator, then
runs two kinds of trial, one after the other, `--trials` times each:

1. **EVICT** (the health agent's verdict, written as the agent writes it: the node's
   `carina.dev/health` label): the operator restarts the gang the way a preemption stops it
   (SIGTERM; kwok plays rank 0 answering with the checkpoint it saved, through the pod's
   carina.dev/simulate-sigterm-message annotation), taints the node, and creates the new gang,
   which the scheduler places elsewhere.
2. **Node lost** (baseline): the same gang's node goes NotReady without warning (its kubelet
   stops reporting); the node lifecycle controller taints it, the worker leaves after its
   toleration (the operator's `node_failure_seconds`, 1 s here: the default is 60), and the
   gang restarts. A lost node cannot save: the resume is from the last periodic checkpoint.

Measured per trial: seconds from the verdict (or the node going NotReady) to the new gang
Running, and, for EVICT, the step the job resumes from (status.lastCheckpoint) against the
step rank 0 was at. Then, against the checkpoint interval: steps redone (EVICT: what the
acknowledged save leaves, measured; node lost: on average half an interval, since a failure
lands uniformly between two saves: modelled, not measured) and GPU time idle while the gang
moves, in steps of `--step-seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from carina.platform.api.health import HEALTH_LABEL, UNHEALTHY_TAINT_KEY
from carina.testcluster import CPU, VELA, TestCluster
from carina.testcluster.pools import SIMULATE_SIGTERM_MESSAGE_ANNOTATION
from carina.testcluster.processes import free_port, wait_until

NS = "bench-health"
STEP_AT_EVICTION = 1234


def job(name: str, workers: int, ack: bool) -> dict[str, Any]:
    annotations = {}
    if ack:
        said = {"step": STEP_AT_EVICTION, "checkpoint": {"step": STEP_AT_EVICTION, "uri": "s3://c"}}
        annotations[SIMULATE_SIGTERM_MESSAGE_ANNOTATION] = json.dumps(said)
    return {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": workers,
            "cluster": "vela",
            "resources": {"gpus": 8, "cpu": "1", "memory": "1Gi"},
            "workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 100000}},
            "failurePolicy": {"backoffSeconds": 0},
            "template": {"metadata": {"annotations": annotations}},
        },
    }


def start_operator(kubeconfig: str) -> subprocess.Popen[bytes]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "CARINA_OPERATOR_PORT": str(port),
        "CARINA_OPERATOR_PROGRESS_INTERVAL": "0",
        "CARINA_OPERATOR_NAMESPACES": NS,
        "CARINA_OPERATOR_LEASE_NAMESPACE": NS,
        "CARINA_OPERATOR_NODE_FAILURE_SECONDS": "1",
        "CARINA_OPERATOR_LOG_LEVEL": "DEBUG",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "carina.operators"],
        env=env,
        stdout=open("/tmp/carina-bench-health.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200

    wait_until(healthy, 60, "operator healthy")
    return proc


def status(cluster: TestCluster, name: str) -> dict[str, Any]:
    return cluster.get_json("trainingjob", name, "-n", NS).get("status") or {}


def worker_node(cluster: TestCluster, name: str) -> str:
    pods = cluster.get_json("pods", "-n", NS, "-l", f"carina.dev/job={name}")["items"]
    return str(sorted(pods, key=lambda p: p["metadata"]["name"])[0]["spec"]["nodeName"])


def running_again(cluster: TestCluster, name: str) -> bool:
    s = status(cluster, name)
    return s.get("phase") == "Running" and s.get("restarts") == 1


def taints(cluster: TestCluster, node: str) -> set[str]:
    return {t["key"] for t in cluster.get_json("node", node)["spec"].get("taints") or []}


def trial(cluster: TestCluster, name: str, workers: int, evict: bool) -> dict[str, Any]:
    cluster.apply([job(name, workers, ack=evict)], server_side=False)
    wait_until(lambda: status(cluster, name).get("phase") == "Running", 60, f"{name} running")
    node = worker_node(cluster, name)
    started = time.monotonic()
    if evict:
        cluster.kubectl("label", "node", node, "--overwrite", f"{HEALTH_LABEL}=EVICT")
    else:
        cluster.set_node_ready(node, False)
    wait_until(lambda: running_again(cluster, name), 180, f"{name} running again", interval=0.1)
    seconds = time.monotonic() - started
    why = {
        e["message"]
        for e in cluster.get_json("events", "-n", NS)["items"]
        if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"].startswith(name)
    }
    for message in sorted(why):
        print(f"{name}: the scheduler said: {message}")
    resumed = (status(cluster, name).get("lastCheckpoint") or {}).get("step")
    if evict:
        cluster.kubectl("label", "node", node, "--overwrite", f"{HEALTH_LABEL}=PASS")
        wait_until(lambda: UNHEALTHY_TAINT_KEY not in taints(cluster, node), 60, "untainted")
        cluster.kubectl("label", "node", node, f"{HEALTH_LABEL}-")
    else:
        cluster.set_node_ready(node, True)
        wait_until(
            lambda: not any(k.startswith("node.kubernetes.io/") for k in taints(cluster, node)),
            120,
            "ready again",
        )
    cluster.kubectl("delete", "trainingjob", name, "-n", NS, "--wait=true")
    # Its pods go after it (garbage collection): the next trial starts on empty nodes.
    wait_until(
        lambda: not cluster.get_json("pods", "-n", NS, "-l", f"carina.dev/job={name}")["items"],
        120,
        f"{name}'s pods gone",
    )
    print(f"{name}: node {node}, running again after {seconds:.2f} s, resumed at {resumed}")
    return {"seconds": seconds, "resumed": resumed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=1.0)
    parser.add_argument("--intervals", default="50,200,1000")
    args = parser.parse_args()
    intervals = [int(i) for i in args.intervals.split(",")]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    with TestCluster(pools=[CPU, VELA.with_size(6)]) as cluster:
        cluster.kubectl("create", "namespace", NS)
        proc = start_operator(str(cluster.kubeconfig))
        try:
            runs: dict[str, list[dict[str, Any]]] = {"EVICT": [], "node lost": []}
            for i in range(args.trials):
                runs["EVICT"].append(trial(cluster, f"evict-{i}", args.workers, evict=True))
                runs["node lost"].append(trial(cluster, f"lost-{i}", args.workers, evict=False))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\n{args.trials} trials each, gangs of {args.workers} x 8 GPUs on 6 kwok Vela nodes")
    print(f"{'path':<12}{'to running again p50 / max s':>30}{'resumed at step':>18}")
    recovery = {}
    for path, results in runs.items():
        secs = [r["seconds"] for r in results]
        recovery[path] = statistics.median(secs)
        resumed = {r["resumed"] for r in results}
        said = ", ".join(str(s) for s in sorted(resumed, key=str))
        print(f"{path:<12}{statistics.median(secs):>19.2f} / {max(secs):<8.2f}{said:>18}")
    print(f"\nsteps lost per move at {args.step_seconds:g} s/step (redone + idle while moving)")
    print(
        f"{'interval':>9}  {'EVICT redone':>12}{'EVICT idle':>11}"
        f"  {'lost redone':>11}{'lost idle':>10}"
    )
    for interval in intervals:
        evict_redone = STEP_AT_EVICTION - min(
            (r["resumed"] or 0) for r in runs["EVICT"]
        )  # measured: the acknowledged save
        lost_redone = interval / 2  # modelled: uniform between saves
        print(
            f"{interval:>9}  {evict_redone:>12}{recovery['EVICT'] / args.step_seconds:>11.1f}"
            f"  {lost_redone:>11.0f}{recovery['node lost'] / args.step_seconds:>10.1f}"
        )
    ratio = recovery["node lost"] / recovery["EVICT"]
    print(f"time to running again, node lost / EVICT: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
