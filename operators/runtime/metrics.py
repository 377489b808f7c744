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
EVENTS_SHED_TOTAL = "carina_operator_events_shed_total"  # counter {reason}: Normal events unsent
# Shared quota (the admission writer)
QUEUE_PENDING_JOBS = "carina_queue_pending_jobs"  # gauge {cluster_queue, reason}
QUEUE_ADMITTED_JOBS = "carina_queue_admitted_jobs"  # gauge {cluster_queue}
QUEUE_ADMISSION_WAIT_SECONDS = "carina_queue_admission_wait_seconds"  # histogram {cluster_queue}
QUEUE_EVICTIONS_TOTAL = "carina_queue_evictions_total"  # counter {cluster_queue, reason}
QUEUE_RESERVED = "carina_queue_reserved"  # gauge {cluster_queue, resource}
QUEUE_BORROWED = "carina_queue_borrowed"  # gauge {cluster_queue, resource}
QUEUE_NOMINAL = "carina_queue_nominal_quota"  # gauge {cluster_queue, resource}
# An evicted gang's checkpoint: acknowledged in time (saved) or not (missed), and how long
# from the eviction to the acknowledgement.
CHECKPOINT_ACKS_TOTAL = "carina_queue_checkpoint_acks_total"  # counter {cluster_queue, result}
CHECKPOINT_ACK_SECONDS = "carina_queue_checkpoint_ack_seconds"  # histogram {cluster_queue}
# Where each job's GPU time went (status.goodput), in GPU-seconds
# `queue` is the ClusterQueue the job holds or waits for ("" when it names none).
JOB_GPU_SECONDS = "carina_job_gpu_seconds"  # gauge {namespace, job, queue, account}
JOB_QUEUE_WAIT_SECONDS = "carina_job_queue_wait_seconds"  # gauge {namespace, job, queue}
# The `account` label's values: status.goodput's fields in GPU-seconds
GPU_ACCOUNTS = (
    "allocated",
    "productive",
    "lost_to_failures",
    "lost_to_preemption",
    "restart_pauses",
    "checkpoint_saves",
)

# 1 for each rank of a running job the engine names a straggler (status.stragglers), with
# its node ("" off a cluster); the series goes when the rank is no longer named
JOB_STRAGGLER = "carina_job_straggler"  # gauge {namespace, job, rank, node}

ALL = (
    JOBS,
    JOB_RESTARTS_TOTAL,
    JOB_START_SECONDS,
    RECONCILE_DURATION_SECONDS,
    KUBE_REQUESTS_TOTAL,
    QUEUE_DEPTH,
    EVENTS_SHED_TOTAL,
    QUEUE_PENDING_JOBS,
    QUEUE_ADMITTED_JOBS,
    QUEUE_ADMISSION_WAIT_SECONDS,
    QUEUE_EVICTIONS_TOTAL,
    QUEUE_RESERVED,
    QUEUE_BORROWED,
    QUEUE_NOMINAL,
    CHECKPOINT_ACKS_TOTAL,
    CHECKPOINT_ACK_SECONDS,
    JOB_GPU_SECONDS,
    JOB_QUEUE_WAIT_SECONDS,
    JOB_STRAGGLER,
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
events_shed = Counter(
    EVENTS_SHED_TOTAL.removesuffix("_total"),
    "Normal events the operator did not post because its queue was deep, by reason",
    ["reason"],
    registry=REGISTRY,
)
queue_pending = Gauge(
    QUEUE_PENDING_JOBS,
    "Jobs waiting for quota, by ClusterQueue and pending reason",
    ["cluster_queue", "reason"],
    registry=REGISTRY,
)
queue_admitted = Gauge(
    QUEUE_ADMITTED_JOBS, "Jobs holding quota, by ClusterQueue", ["cluster_queue"], registry=REGISTRY
)
queue_admission_wait = Histogram(
    QUEUE_ADMISSION_WAIT_SECONDS,
    "Seconds from a job's creation to its admission",
    ["cluster_queue"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)
queue_evictions = Counter(
    QUEUE_EVICTIONS_TOTAL.removesuffix("_total"),
    "Jobs whose quota was taken back, by reason (Preempted, PodsReadyTimeout, ...)",
    ["cluster_queue", "reason"],
    registry=REGISTRY,
)
queue_reserved = Gauge(
    QUEUE_RESERVED,
    "Quota held by admitted jobs (victims until their workers are gone)",
    ["cluster_queue", "resource"],
    registry=REGISTRY,
)
queue_borrowed = Gauge(
    QUEUE_BORROWED,
    "Of the reserved quota, what is borrowed from the cohort",
    ["cluster_queue", "resource"],
    registry=REGISTRY,
)
queue_nominal = Gauge(
    QUEUE_NOMINAL,
    "A ClusterQueue's nominal quota",
    ["cluster_queue", "resource"],
    registry=REGISTRY,
)
checkpoint_acks = Counter(
    CHECKPOINT_ACKS_TOTAL.removesuffix("_total"),
    "Evicted gangs whose rank 0 acknowledged a checkpoint in time (saved) or not (missed)",
    ["cluster_queue", "result"],
    registry=REGISTRY,
)
checkpoint_ack_seconds = Histogram(
    CHECKPOINT_ACK_SECONDS,
    "Seconds from an eviction to the victim's checkpoint acknowledgement",
    ["cluster_queue"],
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900),
    registry=REGISTRY,
)
job_gpu_seconds = Gauge(
    JOB_GPU_SECONDS,
    "GPU-seconds of a job by account: allocated, productive, lost_to_failures,"
    " lost_to_preemption, restart_pauses, checkpoint_saves",
    ["namespace", "job", "queue", "account"],
    registry=REGISTRY,
)
job_queue_wait = Gauge(
    JOB_QUEUE_WAIT_SECONDS,
    "Seconds a job waited for quota holding no GPUs",
    ["namespace", "job", "queue"],
    registry=REGISTRY,
)
job_straggler = Gauge(
    JOB_STRAGGLER,
    "1 for each rank named a straggler (its compute time per step is an outlier), with its node",
    ["namespace", "job", "rank", "node"],
    registry=REGISTRY,
)
