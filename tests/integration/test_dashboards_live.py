"""The dashboards show a running job: Carina's real exporters, scraped by a real Prometheus.

Two workers' `Telemetry`, the operator's registry and the control plane's registry serve
/metrics on loopback, labelled as a job `demo` in namespace `team-a` would be; Prometheus
scrapes them as the chart's monitors do (scrape jobs `carina-operator` and
`carina-control-plane`, `honor_labels` so the series keep the TrainingJob's `job`). Then every
panel of the dashboards, with $namespace=team-a and $job=demo, must return data; only the
kube-state-metrics panels (no such exporter here) may be empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from metrics_catalog import EXTERNAL
from prometheus_client import start_http_server
from promql_sources import DASHBOARDS_DIR, metric_names

from carina.testcluster import PrometheusServer
from carina.testcluster.processes import free_port, wait_until

pytestmark = pytest.mark.prometheus

NAMESPACE, JOB = "team-a", "demo"
# Label values of this test's own series in the shared process-wide registries (removed after).
ROUTE, RESULT = "/dashboards-live-test", "dashboards-live-test"
QUEUE = "team-a-queue"
VARIABLES = {"namespace": NAMESPACE, "job": JOB, "queue": QUEUE, "__rate_interval": "30s"}
GPU = "nvidia.com/gpu"
NODE = "dashboards-live-node"


def _scrape(prometheus: PrometheusServer, job: str, targets: list[str]) -> None:
    """Scrape `targets` as `job`, keeping the targets' own `job` labels (honor_labels)."""
    prometheus.add_targets(job, targets, wait=False)
    # PrometheusServer has no honor_labels argument (yet); set it on the job it just wrote.
    prometheus._jobs[job]["honor_labels"] = True
    prometheus._reload()
    wait_until(lambda: len(prometheus.active_targets(job)) == len(targets), 30, f"job {job}")


def _serve(registry: Any) -> tuple[str, Any]:
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return f"127.0.0.1:{port}", server


@pytest.fixture(scope="module")
def running_job(prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """Exporters for two workers of team-a/demo, the operator and the control plane."""
    from carina.operators.health import metrics as health
    from carina.operators.health.checks import CheckResult, Kind, Outcome
    from carina.operators.runtime import metrics as operator
    from carina.platform.api.health import Health
    from carina.platform.controlplane import telemetry as control_plane
    from carina.workloads.runtime.checkpoint_refs import CheckpointRef
    from carina.workloads.runtime.telemetry import Telemetry

    workers = [
        Telemetry(JOB, NAMESPACE, rank, total_steps=1000, port=free_port()) for rank in (0, 1)
    ]
    operator.jobs.labels(NAMESPACE, "Running").set(1)
    operator.job_restarts.labels(NAMESPACE, JOB, "WorkerFailed").inc()
    operator.job_restarts.labels(NAMESPACE, JOB, "NodeUnhealthy").inc()
    operator.job_straggler.labels(NAMESPACE, JOB, "1", NODE).set(1)
    # One node's health agent: broken ECC, a degraded link, a probe this node cannot run.
    health.record(
        NODE,
        Health.EVICT,
        [
            CheckResult("gpu-ecc", Kind.LIGHT, Outcome.EVICT, "GPU 3: 2 uncorrectable"),
            CheckResult("pcie-link", Kind.LIGHT, Outcome.WARN, "GPU 1: x8 of x16"),
            CheckResult("allreduce", Kind.INVASIVE, Outcome.UNSUPPORTED, "no CUDA"),
        ],
    )
    health.check_seconds.labels("gpu-ecc").set(0.05)
    operator.job_start.labels(NAMESPACE).observe(4.2)
    operator.queue_pending.labels(QUEUE, "WaitingForQuota").set(2)
    operator.queue_admitted.labels(QUEUE).set(1)
    operator.queue_admission_wait.labels(QUEUE).observe(42.0)
    operator.queue_reserved.labels(QUEUE, GPU).set(16)
    operator.queue_borrowed.labels(QUEUE, GPU).set(8)
    operator.queue_nominal.labels(QUEUE, GPU).set(8)
    for account, value in zip(operator.GPU_ACCOUNTS, (1600, 1150, 200, 100, 100, 50), strict=True):
        operator.job_gpu_seconds.labels(NAMESPACE, JOB, QUEUE, account).set(value)
    control_plane.REQUESTS.labels(ROUTE, "GET", "200").inc()
    control_plane.REQUEST_SECONDS.labels(ROUTE, "GET").observe(0.002)
    servers = []
    try:
        worker_targets = [f"127.0.0.1:{w.server.server_port}" for w in workers]
        operator_target, server = _serve(operator.REGISTRY)
        servers.append(server)
        control_plane_target, server = _serve(control_plane.REGISTRY)
        servers.append(server)
        health_target, server = _serve(health.REGISTRY)
        servers.append(server)
        _scrape(prometheus, "carina-workers", worker_targets)
        _scrape(prometheus, "carina-operator", [operator_target])
        _scrape(prometheus, "carina-control-plane", [control_plane_target])
        _scrape(prometheus, "carina-health-agent", [health_target])
        # Samples over a few scrapes, so rates and changes have something to compare.
        for step in range(1, 6):
            for rank, worker in enumerate(workers):
                worker.on_step(step, 3.0 - step / 10, 1e-3, 4096, 2000.0 + rank * 100, 0.4)
                worker.on_eval(2.9)
                worker.on_checkpoint(CheckpointRef(step, f"s3://b/demo/{step}"), 1.5)
                worker.on_step_seconds(0.5)
                if rank == 0:
                    worker.on_rank_seconds([0.4, 0.9])  # rank 1 is slow
            operator.reconcile_duration.labels(RESULT).observe(0.01)
            operator.queue_evictions.labels(QUEUE, "Preempted").inc()
            operator.queue_admission_wait.labels(QUEUE).observe(30.0 + step)
            control_plane.REQUESTS.labels(ROUTE, "GET", "200").inc()
            control_plane.REQUEST_SECONDS.labels(ROUTE, "GET").observe(0.002)
            prometheus.wait_for_query(f'max(carina_worker_step{{job="{JOB}"}}) >= {step}')
        yield prometheus
    finally:
        for job in (
            "carina-workers",
            "carina-operator",
            "carina-control-plane",
            "carina-health-agent",
        ):
            prometheus.remove_job(job)
        for server in servers:
            server.shutdown()
        for worker in workers:
            worker.close()
        operator.jobs.remove(NAMESPACE, "Running")
        operator.job_restarts.remove(NAMESPACE, JOB, "WorkerFailed")
        operator.job_restarts.remove(NAMESPACE, JOB, "NodeUnhealthy")
        operator.job_straggler.remove(NAMESPACE, JOB, "1", NODE)
        health.record(NODE, Health.PASS, [])  # the test's node series go
        for state in Health:
            health.state.remove(NODE, state.value)
        health.check_seconds.remove("gpu-ecc")
        operator.job_start.remove(NAMESPACE)
        operator.reconcile_duration.remove(RESULT)
        operator.queue_pending.remove(QUEUE, "WaitingForQuota")
        operator.queue_admitted.remove(QUEUE)
        operator.queue_admission_wait.remove(QUEUE)
        operator.queue_evictions.remove(QUEUE, "Preempted")
        for gauge in (operator.queue_reserved, operator.queue_borrowed, operator.queue_nominal):
            gauge.remove(QUEUE, GPU)
        for account in operator.GPU_ACCOUNTS:
            operator.job_gpu_seconds.remove(NAMESPACE, JOB, QUEUE, account)
        control_plane.REQUESTS.remove(ROUTE, "GET", "200")
        control_plane.REQUEST_SECONDS.remove(ROUTE, "GET")


def _panels() -> list[tuple[str, str]]:
    out = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", target["expr"]))
    return out


# kube-state-metrics' panels (GPUs by pool) have no exporter here; the other checks cover them.
PANELS = [(s, e) for s, e in _panels() if not metric_names(e) & (EXTERNAL.keys() - {"up"})]


def _fill(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], expr)


@pytest.mark.parametrize(("source", "expr"), PANELS, ids=[source for source, _ in PANELS])
def test_every_panel_shows_the_running_job(
    running_job: PrometheusServer, source: str, expr: str
) -> None:
    results = running_job.query(_fill(expr))
    assert results, f"{source}: no data for {_fill(expr)}"
