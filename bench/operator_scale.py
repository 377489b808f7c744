"""The operator at scale on kwok: apply-to-all-running latency against a plain-client floor.

    .venv/bin/python bench/operator_scale.py [--nodes 200] [--jobs 500] [--workers 4]
        [--no-floor]

The 10,000-job run:

    .venv/bin/python bench/operator_scale.py --nodes 2000 --jobs 10000 --no-floor \
        --timeout 3600 --kwok-parallelism 16 --lease-seconds 400 --grace-seconds 900

(kwok renews each fake node's Lease every lease/4 seconds: at the kubelet's 40 s, 2,000 nodes
are 200 writes a second, more than two cores give the API server beside the run, and nodes
went NotReady under load; 400 s makes 2,000 nodes cost what 200 do by default.)

Starts the test control plane (etcd, kube-apiserver, scheduler, controller-manager, kwok) with
`--nodes` fake 8-GPU nodes, then runs two rounds on it, one after the other:

1. floor: a plain client creates each job's worker pods directly (the same manifests the
   operator renders), 32 creates in flight; a job's latency runs from its first create to
   all its pods Running (seen on a watch). Nothing is cheaper on this machine.
2. operator: `python -m carina.operators` runs; the client creates all TrainingJobs with 32
   creates in flight; a job's latency runs from its create to status.phase Running (seen on
   a watch on TrainingJobs). The operator must see the job, create its children, see the
   pods run and write status: the ratio operator/floor is its overhead.

Also printed: API requests per job the operator made (its own counter, kopf's watches
aside), the operator's peak resident memory (VmHWM) and, for each round, the CPU seconds each
process spent (operator, kube-apiserver, etcd, scheduler, kwok, ...) and their total: what
bounds the run. Workers ask for no GPU (2,000 workers would not fit on 1,600 GPUs) and the
nodes carry no taint, so the scheduler's work is the same in both rounds. Results go into
docs/benchmarks.md by hand, with the machine they ran on.
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

from carina.platform.api.types import GROUP, PLURAL, VERSION, TrainingJob
from carina.platform.planning.render import RenderSettings, build_worker_pod
from carina.testcluster import CPU, FakeNodeTuning, NodePool, TestCluster
from carina.testcluster.cluster import DEFAULT_CRDS_DIR
from carina.testcluster.processes import cpu_seconds, free_port, memory_kib, wait_until

CONCURRENCY = 32


def job_manifest(name: str, namespace: str, workers: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": workers,
            "resources": {"cpu": "100m", "memory": "64Mi"},
            "workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 20}},
        },
    }


class Watcher(threading.Thread):
    """`kubectl get -w` on one namespace's pods or TrainingJobs; when each became Running.

    kubectl (client-go) does the watching and decoding; this thread stamps lines as they
    arrive. The API server closes a watch that falls behind (on a loaded machine it does);
    the watch is then started again, its initial listing stamping what turned Running in the
    gap (late: `reconnects` says how often that happened).
    """

    def __init__(self, cluster: TestCluster, namespace: str, kind: str):
        super().__init__(daemon=True)
        assert cluster.bins
        self.running: dict[str, float] = {}
        self.reconnects = -1
        self.closed = False
        self.args = [
            str(cluster.bins.kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
            "get",
            kind,
            "-n",
            namespace,
            "--watch",
            "--no-headers",
            "-o",
            "custom-columns=NAME:.metadata.name,PHASE:.status.phase",
        ]
        self.proc: subprocess.Popen[str] | None = None

    def run(self) -> None:
        while not self.closed:
            self.reconnects += 1
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, bufsize=1)
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                now = time.perf_counter()
                parts = line.split()
                if len(parts) == 2 and parts[1] == "Running":
                    self.running.setdefault(parts[0], now)
            self.proc.wait()

    def close(self) -> None:
        self.closed = True
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def progress(watcher: Watcher, total: int) -> bool:
    """True once `total` objects ran; prints how many so far every few seconds."""
    now = time.monotonic()
    if now - getattr(watcher, "_said", 0) > 5:
        watcher._said = now  # type: ignore[attr-defined]
        print(
            f"  {len(watcher.running)}/{total} running ({watcher.reconnects} reconnects)",
            flush=True,
        )
    return len(watcher.running) >= total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
        "mean": statistics.fmean(latencies),
    }


def wait_namespace_empty(core: client.CoreV1Api, namespace: str, timeout: float) -> None:
    core.delete_namespace(namespace)
    wait_until(
        lambda: not core.list_namespace(field_selector=f"metadata.name={namespace}").items,
        timeout,
        f"namespace {namespace} deleted",
        interval=1,
    )


def make_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})
    wait_until(
        lambda: bool(core.list_namespaced_service_account(name).items),
        60,
        f"default service account in {name}",
    )


def cluster_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each process has used so far, by name."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_spent(before: dict[str, float], pids: dict[str, int]) -> str:
    """The CPU seconds each process used since `before`, most first, and their total."""
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} {v:.0f}" for n, v in ranked) + f" (total {sum(spent.values()):.0f})"


def floor_round(
    cluster: TestCluster, api: client.ApiClient, jobs: int, workers: int, timeout: float
) -> list[float]:
    core = client.CoreV1Api(api)
    ns = "bench-floor"
    make_namespace(core, ns)
    pids = {c.name: c.popen.pid for c in cluster.components}
    watcher = Watcher(cluster, ns, "pods")
    watcher.start()
    time.sleep(0.5)
    settings = RenderSettings()
    manifests = []
    for j in range(jobs):
        tj = job_manifest(f"job-{j:05d}", ns, workers)
        parsed = TrainingJob.parse(tj)
        manifests.append([build_worker_pod(parsed, i, 0, settings) for i in range(workers)])
    started: dict[int, float] = {}

    def create(j: int, pod: dict[str, Any]) -> None:
        started.setdefault(j, time.perf_counter())
        core.create_namespaced_pod(ns, pod, _preload_content=False)

    cpu_before = cluster_cpu(pids)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for f in [pool.submit(create, j, p) for j, pods in enumerate(manifests) for p in pods]:
            f.result()
    names = {j: [p["metadata"]["name"] for p in pods] for j, pods in enumerate(manifests)}
    wait_until(
        lambda: progress(watcher, jobs * workers), timeout, "floor pods Running", interval=0.5
    )
    print(
        f"  all {jobs * workers} pods Running {time.perf_counter() - t0:.1f} s after the first "
        f"create; CPU seconds meanwhile: {cpu_spent(cpu_before, pids)}",
        flush=True,
    )
    print(f"  watch reconnects: {watcher.reconnects}", flush=True)
    watcher.close()
    latencies = [max(watcher.running[n] for n in names[j]) - started[j] for j in range(jobs)]
    wait_namespace_empty(core, ns, timeout)
    return latencies


def operator_round(
    cluster: TestCluster,
    api: client.ApiClient,
    kubeconfig: str,
    jobs: int,
    workers: int,
    timeout: float,
    clean_up: bool = True,
) -> tuple[list[float], float, int, str]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = "bench-operator"
    make_namespace(core, ns)
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "CARINA_OPERATOR_PORT": str(port),
        "CARINA_OPERATOR_PROGRESS_INTERVAL": "0",
        "CARINA_OPERATOR_NAMESPACES": ns,
    }
    log = open("/tmp/carina-bench-operator.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "carina.operators"], env=env, stdout=log, stderr=subprocess.STDOUT
    )

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200

    try:
        wait_until(healthy, 60, "operator healthy")
        pids = {"operator": proc.pid} | {c.name: c.popen.pid for c in cluster.components}
        cpu_before = cluster_cpu(pids)
        watcher = Watcher(cluster, ns, "trainingjobs")
        watcher.start()
        time.sleep(0.5)
        started: dict[str, float] = {}

        def create(j: int) -> None:
            name = f"job-{j:05d}"
            started[name] = time.perf_counter()
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                job_manifest(name, ns, workers),
                _preload_content=False,
            )

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(create, range(jobs)))
        print(f"  created {jobs} TrainingJobs in {time.perf_counter() - t0:.1f} s", flush=True)

        said = [0.0]

        def running_and_sampled() -> bool:
            if time.monotonic() - said[0] > 30:
                said[0] = time.monotonic()
                rss = memory_kib(proc.pid, "VmRSS")
                print(f"  operator RSS {rss / 1024:.0f} MiB", flush=True)
            return progress(watcher, jobs)

        wait_until(running_and_sampled, timeout, "TrainingJobs Running", interval=0.5)
        elapsed = time.perf_counter() - t0
        print(
            f"  all {jobs} Running {elapsed:.1f} s after the first create "
            f"({jobs / elapsed:.1f} jobs/s); CPU seconds meanwhile: {cpu_spent(cpu_before, pids)}",
            flush=True,
        )
        rss_now = {n: memory_kib(pid, "VmRSS") / 1024 for n, pid in pids.items()}
        print(
            "  resident memory now: " + ", ".join(f"{n} {v:.0f} MiB" for n, v in rss_now.items()),
            flush=True,
        )
        print(f"  watch reconnects: {watcher.reconnects}", flush=True)
        watcher.close()
        latencies = [watcher.running[n] - started[n] for n in started]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        requests = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("carina_operator_kube_requests_total{")
        )
        hwm = memory_kib(proc.pid, "VmHWM")
        by_verb = "; ".join(
            line
            for line in metrics.splitlines()
            if line.startswith("carina_operator_kube_requests_total{")
        )
    finally:
        proc.terminate()
        proc.wait(30)
    if clean_up:
        wait_namespace_empty(core, ns, timeout)
    return latencies, requests / jobs, hwm, by_verb


def install_crds(cluster: TestCluster) -> None:
    # `kubectl wait` right after the apply can fail while the CRD has no conditions yet.
    for attempt in range(5):
        try:
            cluster.install_crds(DEFAULT_CRDS_DIR)
            return
        except subprocess.CalledProcessError:
            if attempt == 4:
                raise
            time.sleep(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--no-floor", action="store_true", help="the operator round only")
    p.add_argument("--kwok-parallelism", type=int, help="kwok's updates in flight (default 4)")
    p.add_argument("--lease-seconds", type=int, default=40, help="fake nodes' Lease duration")
    p.add_argument("--grace-seconds", type=int, help="node monitor grace period (default 50)")
    args = p.parse_args()

    pool = NodePool(
        name="bench", size=args.nodes, gpus=8, gpu_product="NVIDIA-A100-SXM4-80GB", nodes_per_rack=8
    )
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"starting the test cluster with {args.nodes} fake 8-GPU nodes ...", flush=True)
    tuning = FakeNodeTuning(
        lease_seconds=args.lease_seconds,
        grace_seconds=args.grace_seconds,
        parallelism=args.kwok_parallelism,
    )
    print(f"fake nodes: {tuning}")
    with TestCluster(pools=[CPU], crds_dir=None, fake_nodes=tuning) as cluster:
        # 2,000 nodes take kwok longer than the default minute to report Ready.
        cluster.create_pools([pool], timeout=max(60.0, args.nodes / 5))
        install_crds(cluster)
        config.load_kube_config(config_file=str(cluster.kubeconfig))
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = CONCURRENCY * 2
        api = client.ApiClient(configuration)
        print(
            f"{args.jobs} jobs x {args.workers} workers, {CONCURRENCY} creates in flight",
            flush=True,
        )
        fs: dict[str, float] | None = None
        if not args.no_floor:
            floor = floor_round(cluster, api, args.jobs, args.workers, args.timeout)
            fs = summary(floor)
            print(
                "floor    (plain client, pods): "
                + ", ".join(f"{k} {v:.2f}s" for k, v in fs.items()),
                flush=True,
            )
        # The last round leaves its namespace: the cluster is torn down right after.
        op, per_job, hwm, by_verb = operator_round(
            cluster, api, str(cluster.kubeconfig), args.jobs, args.workers, args.timeout, False
        )
        os_ = summary(op)
        print(
            "operator (TrainingJobs):       " + ", ".join(f"{k} {v:.2f}s" for k, v in os_.items())
        )
        if fs is not None:
            print(
                f"ratio operator/floor: p50 {os_['p50'] / fs['p50']:.2f}, "
                f"p99 {os_['p99'] / fs['p99']:.2f}"
            )
        print(f"operator API requests per job: {per_job:.1f} ({by_verb})")
        print(f"operator peak memory (VmHWM): {hwm / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
