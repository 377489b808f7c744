"""Every Prometheus metric the operator exports, by name: the list dashboards are checked against.

Per-job series carry `namespace` and `job` (bounded: never a pod name or a step).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

JOBS = "carina_jobs"  # gauge {namespace, phase}: TrainingJobs the operator sees
JOB_RESTARTS_TOTAL = "carina_job_restarts_total"  # counter {namespace, job, reason}: gang restarts
JOB_START_SECONDS = (
    "carina_job_start_seconds"  # histogram {namespace}: apply -> all workers running
)
RECONCILE_DURATION_SECONDS = "carina_reconcile_duration_seconds"  # histogram {result}
KUBE_REQUESTS_TOTAL = "carina_operator_kube_requests_total"  # counter {verb, resource, code}
QUEUE_DEPTH = "carina_operator_queue_depth"  # gauge: jobs waiting for a reconcile

ALL = (
    JOBS,
    JOB_RESTARTS_TOTAL,
    JOB_START_SECONDS,
    RECONCILE_DURATION_SECONDS,
    KUBE_REQUESTS_TOTAL,
    QUEUE_DEPTH,
)

REGISTRY = CollectorRegistry(auto_describe=True)

jobs = Gauge(JOBS, "TrainingJobs by status.phase", ["namespace", "phase"], registry=REGISTRY)
job_restarts = Counter(
    JOB_RESTARTS_TOTAL.removesuffix("_total"),
    "Gang restarts, by reason (WorkerFailed, NodeFailure, Evicted, Preempted)",
    ["namespace", "job", "reason"],
    registry=REGISTRY,
)
job_start = Histogram(
    JOB_START_SECONDS,
    "Seconds from a TrainingJob's creation to all its workers running (first start)",
    ["namespace"],
    buckets=(0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
reconcile_duration = Histogram(
    RECONCILE_DURATION_SECONDS,
    "Seconds one reconcile of one TrainingJob takes, by result (ok, error)",
    ["result"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
kube_requests = Counter(
    KUBE_REQUESTS_TOTAL.removesuffix("_total"),
    "Kubernetes API requests the operator made (besides kopf's watches), by verb and result",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
queue_depth = Gauge(QUEUE_DEPTH, "TrainingJobs waiting for a reconcile", registry=REGISTRY)
