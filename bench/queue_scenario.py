"""Shared quota on kwok: mixed gang sizes through ClusterQueues, against no queues at all.

    .venv/bin/python bench/queue_scenario.py [--nodes 8] [--jobs 24] [--seconds 12]

Starts the test control plane with `--nodes` fake 8-GPU A100 nodes (kwok), then runs the same
job mix twice, one round after the other, with a fresh operator each time:

1. no queues (baseline): every TrainingJob names no queue, so the operator creates every
   gang's pods at once and the scheduler places what fits, pod by pod;
2. queues: four ClusterQueues in two cohorts share the GPUs (nominal quota a quarter of
   them each, borrowing allowed), one namespace and LocalQueue per team; a gang's pods are
   created only once its whole gang is admitted.

The mix, per team in turn: small (1 worker), medium (2) and large (4) gangs of 8-GPU workers,
every worker running `--seconds` (kwok's simulate-exit annotations, from spec.template) and
then exiting 0. Reported per round: wall time until every job Succeeded; time from creation
to the gang running, by size class (p50, max); GPUs held by gangs that were only partly
placed (some workers running, some pending: GPUs that cannot train), as the mean and peak
over 1 s samples; for the queued round the mean share of GPUs reserved; and both series over
time, every 10 s. The ratio queued
/ baseline of wall time is the price (or gain) of all-or-nothing admission.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from kubernetes import client, config

from carina.platform.api.types import GROUP, PLURAL, VERSION
from carina.testcluster import CPU, SIMULATE_EXIT_CODE_ANNOTATION, VELA, TestCluster
from carina.testcluster.pools import SIMULATE_EXIT_DELAY_ANNOTATION
from carina.testcluster.processes import free_port, wait_until

SIZES = {"small": 1, "medium": 2, "large": 4}
TEAMS = ("team-a", "team-b", "team-c", "team-d")


def job(name: str, ns: str, workers: int, seconds: int, queue: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": workers,
        "cluster": "vela",
        "resources": {"gpus": 8, "cpu": "1", "memory": "1Gi"},
        "workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 200}},
        "template": {
            "metadata": {
                "annotations": {
                    SIMULATE_EXIT_CODE_ANNOTATION: "0",
                    SIMULATE_EXIT_DELAY_ANNOTATION: f"{seconds}s",
                }
            }
        },
    }
    if queue:
        spec["queue"] = queue
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def queues(gpus: int, tag: str) -> list[dict[str, Any]]:
    share = gpus // len(TEAMS)
    out: list[dict[str, Any]] = []
    for i, team in enumerate(TEAMS):
        out.append(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ClusterQueue",
                "metadata": {"name": f"{team}-{tag}"},
                "spec": {
                    "cohort": f"cohort-{i // 2}-{tag}",
                    "resources": [{"name": "nvidia.com/gpu", "nominalQuota": share}],
                },
            }
        )
    return out


def local_queue(ns: str, cq: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LocalQueue",
        "metadata": {"name": "default", "namespace": ns},
        "spec": {"clusterQueue": cq},
    }


def mix(jobs: int) -> list[tuple[str, str, int]]:
    """(team, size class, workers) in creation order: teams take turns, sizes cycle."""
    sizes = list(SIZES)
    out = []
    for i in range(jobs):
        size = sizes[(i // len(TEAMS)) % len(sizes)]
        out.append((TEAMS[i % len(TEAMS)], size, SIZES[size]))
    return out


class Sampler(threading.Thread):
    """Every second: GPUs of partly placed gangs, and GPUs reserved in the queues."""

    def __init__(self, core: client.CoreV1Api, custom: client.CustomObjectsApi, label: str):
        super().__init__(daemon=True)
        self.core, self.custom, self.label = core, custom, label
        self.partial: list[float] = []
        self.reserved: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            pods = self.core.list_pod_for_all_namespaces(label_selector=self.label).items
            gangs: dict[tuple[str, str], list[str]] = {}
            for p in pods:
                if p.metadata.deletion_timestamp or p.status.phase in ("Succeeded", "Failed"):
                    continue
                key = (p.metadata.namespace, p.metadata.labels.get("carina.dev/job", ""))
                gangs.setdefault(key, []).append(p.status.phase)
            held = 0
            for phases in gangs.values():
                running = phases.count("Running")
                if 0 < running < len(phases):
                    held += running * 8
            self.partial.append(held)
            try:
                cqs = self.custom.list_cluster_custom_object(GROUP, VERSION, "clusterqueues")
            except client.ApiException:
                continue
            self.reserved.append(
                sum(
                    r.get("reserved", 0)
                    for cq in cqs["items"]
                    for r in (cq.get("status") or {}).get("resources", [])
                    if r["name"] == "nvidia.com/gpu"
                )
            )


def start_operator(
    kubeconfig: str, namespaces: list[str], log: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "CARINA_OPERATOR_PORT": str(port),
        "CARINA_OPERATOR_PROGRESS_INTERVAL": "0",
        "CARINA_OPERATOR_NAMESPACES": ",".join(namespaces),
        "CARINA_OPERATOR_LEASE_NAMESPACE": namespaces[0],
        "CARINA_OPERATOR_ADMISSION_INTERVAL": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "carina.operators"],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200

    wait_until(healthy, 60, "operator healthy")
    return proc, port


def run_round(
    cluster: TestCluster, api: client.ApiClient, name: str, jobs: int, seconds: int, queued: bool
) -> dict[str, Any]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespaces = [f"{name}-{t}" for t in TEAMS]
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns}})
    for ns in namespaces:
        wait_until(
            lambda ns=ns: bool(core.list_namespaced_service_account(ns).items), 60, "default SA"
        )
    gpus = sum(int(n.status.allocatable.get("nvidia.com/gpu", 0)) for n in core.list_node().items)
    if queued:
        for obj in queues(gpus, name):
            custom.create_cluster_custom_object(GROUP, VERSION, "clusterqueues", obj)
        for ns, team in zip(namespaces, TEAMS, strict=True):
            custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, "localqueues", local_queue(ns, f"{team}-{name}")
            )
    proc, _ = start_operator(str(cluster.kubeconfig), namespaces, f"/tmp/carina-bench-{name}.log")
    sampler = Sampler(core, custom, "carina.dev/job")
    try:
        sampler.start()
        t0 = time.time()
        created: dict[tuple[str, str], tuple[str, float]] = {}
        for i, (team, size, workers) in enumerate(mix(jobs)):
            ns = f"{name}-{team}"
            jname = f"{size}-{i:03d}"
            created[(ns, jname)] = (size, time.time())
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                job(jname, ns, workers, seconds, "default" if queued else None),
            )
        running_at: dict[tuple[str, str], float] = {}

        def all_done() -> bool:
            done = 0
            for ns in namespaces:
                for tj in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
                    key = (ns, tj["metadata"]["name"])
                    status = tj.get("status") or {}
                    if status.get("phase") in ("Running", "Succeeded") and key not in running_at:
                        running_at[key] = time.time()
                    done += status.get("phase") == "Succeeded"
            return done == jobs

        wait_until(all_done, 1800, f"{name}: every job Succeeded", interval=0.5)
        wall = time.time() - t0
    finally:
        sampler.stop.set()
        proc.terminate()
        proc.wait(30)
    waits: dict[str, list[float]] = {s: [] for s in SIZES}
    for key, (size, at) in created.items():
        waits[size].append(running_at.get(key, at) - at)
    return {
        "wall": wall,
        "waits": waits,
        "partial_mean": statistics.fmean(sampler.partial) if sampler.partial else 0.0,
        "partial_peak": max(sampler.partial, default=0),
        "reserved_share": (
            statistics.fmean(sampler.reserved) / gpus if sampler.reserved and queued else None
        ),
        "gpus": gpus,
        "reserved_series": list(sampler.reserved) if queued else [],
        "partial_series": list(sampler.partial),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=12, help="each worker's run time")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    with TestCluster(pools=[CPU, VELA.with_size(args.nodes)]) as cluster:
        config.load_kube_config(config_file=str(cluster.kubeconfig))
        api = client.ApiClient()
        rounds = {
            "baseline": run_round(cluster, api, "plain", args.jobs, args.seconds, queued=False),
            "queues": run_round(cluster, api, "queued", args.jobs, args.seconds, queued=True),
        }
    gpus = rounds["queues"]["gpus"]
    print(f"\n{args.jobs} jobs on {args.nodes} nodes ({gpus} GPUs), workers run {args.seconds}s")
    print(
        f"{'round':<10}{'wall s':>8}  {'to running p50/max s (small, medium, large)':<46}"
        f"{'partial-gang GPUs mean/peak':>28}{'reserved':>10}"
    )
    for name, r in rounds.items():
        waits = ", ".join(
            f"{statistics.median(v):.0f}/{max(v):.0f}" if v else "-" for v in r["waits"].values()
        )
        share = f"{r['reserved_share']:.0%}" if r["reserved_share"] is not None else "-"
        print(
            f"{name:<10}{r['wall']:>8.1f}  {waits:<46}"
            f"{r['partial_mean']:>18.1f} / {r['partial_peak']:<7.0f}{share:>10}"
        )
    print("\nover time, every 10 s: GPUs reserved in the queues | GPUs in partly placed gangs")
    for name, r in rounds.items():
        reserved = r["reserved_series"][::10]
        partial = r["partial_series"][::10]
        cells = [
            f"{reserved[i]:.0f}|{partial[i]:.0f}" if i < len(reserved) else f"-|{partial[i]:.0f}"
            for i in range(len(partial))
        ]
        print(f"{name:<10}" + " ".join(cells))
    ratio = rounds["queues"]["wall"] / rounds["baseline"]["wall"]
    print(f"wall time ratio queues / baseline: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
