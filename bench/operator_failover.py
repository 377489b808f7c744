"""Two operator replicas with kopf peering: how long a failover takes, and that one works.

    .venv/bin/python bench/operator_failover.py [--trials 3] [--lifetime 15] [--jobs 20]

Starts the test control plane (etcd, kube-apiserver, scheduler, controller-manager, kwok) with
fake 8-GPU nodes, installs kopf's peering CRDs and one ClusterKopfPeering, then, per trial and
per way of stopping:

1. replica A (priority 200) and replica B (priority 100) run `python -m carina.operators`
   with CARINA_OPERATOR_PEERING set; `--jobs` TrainingJobs of 2 workers are created and run;
   Both watch the whole cluster (as the chart's replicas do), so they meet in the
   ClusterKopfPeering; a namespaced operator would look for a KopfPeering in its namespace.
2. B's own counter of reconciles must still be zero: while A lives, B does nothing, so no
   job is ever reconciled by two replicas at once;
3. A is stopped, by SIGTERM (a rolling update: A removes its peering record on the way out)
   or by SIGKILL (a crash or a lost node: its record stays until `--lifetime` expires), and a
   probe job is created at the same moment; failover time is from the stop to the probe's
   status.phase Running, which only B can write.

The baseline beside it: the same probe job created while A is up (its apply-to-Running time,
what a job costs with no failover in the way). Results go into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config

from carina.platform.api.types import GROUP, PLURAL, VERSION
from carina.testcluster import CPU, NodePool, TestCluster
from carina.testcluster.cluster import DEFAULT_CRDS_DIR
from carina.testcluster.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
PEERING_CRDS = ROOT / "helm/carina/charts/kopf-peering/crds"
PEERING = "carina-bench"
NAMESPACE = "bench-failover"


def job_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 2,
            "resources": {"cpu": "100m", "memory": "64Mi"},
            "workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 20}},
        },
    }


class Replica:
    """One `python -m carina.operators` process in the peering, with its /metrics port."""

    def __init__(self, name: str, kubeconfig: str, priority: int, lifetime: int):
        self.name = name
        self.port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "CARINA_OPERATOR_PORT": str(self.port),
            "CARINA_OPERATOR_PROGRESS_INTERVAL": "0",
            "CARINA_OPERATOR_PEERING": PEERING,
            "CARINA_OPERATOR_PRIORITY": str(priority),
            "CARINA_OPERATOR_PEERING_LIFETIME": str(lifetime),
        }
        self.log = open(f"/tmp/carina-bench-failover-{name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carina.operators"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.healthy, 60, f"replica {name} healthy")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def reconciles(self) -> float:
        """Reconciles this replica ran (its carina_reconcile_duration_seconds count)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("carina_reconcile_duration_seconds_count")
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        self.log.close()


def phase(custom: client.CustomObjectsApi, name: str) -> str:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    return str((obj.get("status") or {}).get("phase") or "")


def create(custom: client.CustomObjectsApi, name: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job_manifest(name))


def time_to_running(
    custom: client.CustomObjectsApi, name: str, since: float, timeout: float
) -> float:
    wait_until(lambda: phase(custom, name) == "Running", timeout, f"{name} Running", interval=0.1)
    return time.perf_counter() - since


def fresh_namespace(core: client.CoreV1Api) -> None:
    if core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items:
        core.delete_namespace(NAMESPACE)
        wait_until(
            lambda: not core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items,
            180,
            f"namespace {NAMESPACE} deleted",
            interval=1,
        )
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    wait_until(
        lambda: bool(core.list_namespaced_service_account(NAMESPACE).items),
        60,
        f"default service account in {NAMESPACE}",
    )


def trial(
    cluster: TestCluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    sig: int,
    jobs: int,
    lifetime: int,
    n: int,
) -> dict[str, float]:
    fresh_namespace(core)
    kubeconfig = str(cluster.kubeconfig)
    a = Replica("a", kubeconfig, 200, lifetime)
    b = Replica("b", kubeconfig, 100, lifetime)
    try:
        for j in range(jobs):
            create(custom, f"job-{j:03d}")
        wait_until(
            lambda: all(phase(custom, f"job-{j:03d}") == "Running" for j in range(jobs)),
            300,
            "jobs Running",
            interval=0.5,
        )
        t = time.perf_counter()
        create(custom, f"baseline-{n}")
        baseline = time_to_running(custom, f"baseline-{n}", t, 120)
        standby_reconciles = b.reconciles()
        active_reconciles = a.reconciles()
        t0 = time.perf_counter()
        a.proc.send_signal(sig)
        create(custom, f"probe-{n}")
        failover = time_to_running(custom, f"probe-{n}", t0, lifetime * 4 + 120)
        a.stop()
        return {
            "baseline": baseline,
            "failover": failover,
            "standby_reconciles_before": standby_reconciles,
            "active_reconciles_before": active_reconciles,
            "standby_reconciles_after": b.reconciles(),
        }
    finally:
        a.stop(signal.SIGKILL)
        b.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--lifetime", type=int, default=15, help="CARINA_OPERATOR_PEERING_LIFETIME")
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--nodes", type=int, default=16)
    args = p.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    pool = NodePool(name="bench", size=args.nodes, gpus=8, nodes_per_rack=8)
    with TestCluster(pools=[CPU, pool], crds_dir=None) as cluster:
        cluster.install_crds(DEFAULT_CRDS_DIR)
        cluster.install_crds(PEERING_CRDS)
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "kopf.dev/v1",
                    "kind": "ClusterKopfPeering",
                    "metadata": {"name": PEERING},
                }
            ),
        )
        config.load_kube_config(config_file=str(cluster.kubeconfig))
        core, custom = client.CoreV1Api(), client.CustomObjectsApi()
        results: dict[str, list[dict[str, float]]] = {"SIGTERM": [], "SIGKILL": []}
        n = 0
        for _ in range(args.trials):
            for name, sig in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
                n += 1
                r = trial(cluster, core, custom, sig, args.jobs, args.lifetime, n)
                results[name].append(r)
                print(
                    f"  {name}: failover {r['failover']:.2f}s (baseline {r['baseline']:.2f}s); "
                    f"reconciles before the stop: active {r['active_reconciles_before']:.0f}, "
                    f"standby {r['standby_reconciles_before']:.0f}",
                    flush=True,
                )
        print(f"peering lifetime {args.lifetime}s, {args.jobs} running jobs, {args.trials} trials")
        for name, rs in results.items():
            fo = [r["failover"] for r in rs]
            base = [r["baseline"] for r in rs]
            print(
                f"{name}: failover median {statistics.median(fo):.2f}s (max {max(fo):.2f}s), "
                f"baseline median {statistics.median(base):.2f}s, "
                f"ratio {statistics.median(fo) / statistics.median(base):.1f}; "
                f"standby reconciles while the active lived: "
                f"{sum(r['standby_reconciles_before'] for r in rs):.0f}"
            )


if __name__ == "__main__":
    main()
