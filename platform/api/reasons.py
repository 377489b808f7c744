"""One vocabulary for why a job is where it is.

The same words appear in `status.conditions[].reason`, in Kubernetes events and in the
`reason` label of metrics, so a person reading any of them learns the same thing. Add a
reason here before using it anywhere else.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """Condition types a TrainingJob carries (each True/False/Unknown)."""

    ADMITTED = "Admitted"
    WORKERS_READY = "WorkersReady"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    # an evicted gang's rank 0 acknowledged the checkpoint it saved on SIGTERM (or did not)
    CHECKPOINTED = "Checkpointed"
    # a Running gang's step stopped advancing (platform/planning/stall.py)
    STALLED = "Stalled"


class Reason(StrEnum):
    """Why a condition has its status; CamelCase as Kubernetes reasons are."""

    # starting
    CREATED = "Created"
    WORKERS_PENDING = "WorkersPending"
    UNSCHEDULABLE = "Unschedulable"
    # spec.topology: no domain of the level has room for the whole gang (yet)
    NO_TOPOLOGY_DOMAIN = "NoTopologyDomain"
    # spec.topology names a node label that is not one of the operator's topology levels
    UNKNOWN_TOPOLOGY_LEVEL = "UnknownTopologyLevel"
    WORKERS_STARTING = "WorkersStarting"
    # a preflight-gated gang waits for nodes with a recent passing full health check
    PREFLIGHT_PENDING = "PreflightPending"
    # pipelines (planning/dependencies.py): a job waits, with no workers and no quota, until
    # the jobs it depends on have Succeeded; one that does not exist (yet) is waited for too
    WAITING_FOR_UPSTREAM = "WaitingForUpstream"
    UPSTREAM_MISSING = "UpstreamMissing"
    WORKERS_RUNNING = "WorkersRunning"
    # restarts: whose fault, so lost GPU time can be accounted for
    WORKER_FAILED = "WorkerFailed"  # the training code exited with a retryable code
    NODE_FAILURE = "NodeFailure"  # the worker's node went NotReady or disappeared
    EVICTED = "Evicted"  # the kubelet or an API eviction removed the worker
    PREEMPTED = "Preempted"  # the worker saved a checkpoint on SIGTERM and stopped
    # the health agent found the worker's node broken (EVICT): the gang saved and moved
    NODE_UNHEALTHY = "NodeUnhealthy"
    # a worker's resume passed over a damaged checkpoint (an event, not a condition)
    CHECKPOINT_CORRUPT = "CheckpointCorrupt"
    # a Running gang logged no step for too long (a condition, and a restart counted as
    # application: a deterministic hang consumes maxRestarts), or steps again
    STALLED = "Stalled"
    STEPPING = "Stepping"
    # a rank's step time is an outlier (an event; the rank is in status.stragglers)
    STRAGGLER = "Straggler"
    # a victim of preemption saved its checkpoint in time, or was killed first
    CHECKPOINT_SAVED = "CheckpointSaved"
    GRACE_PERIOD_EXCEEDED = "GracePeriodExceeded"
    # suspension
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    # endings
    SUCCEEDED = "Succeeded"
    PERMANENT_EXIT_CODE = "PermanentExitCode"
    MAX_RESTARTS_EXCEEDED = "MaxRestartsExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INVALID_SPEC = "InvalidSpec"
    # an upstream job failed, or Succeeded without the checkpoint a reference needs, or the
    # jobs' dependencies loop back to this one: it can never start
    UPSTREAM_FAILED = "UpstreamFailed"
    UPSTREAM_WITHOUT_CHECKPOINT = "UpstreamWithoutCheckpoint"
    DEPENDENCY_CYCLE = "DependencyCycle"
    # the API server refused a worker pod (or the gang's Service) as invalid:
    # a template value it checks and the CRD cannot, such as a label key or a volume source
    WORKERS_REFUSED = "WorkersRefused"


# Restart reasons, grouped by the RestartCounts field they increment.
INFRASTRUCTURE_REASONS = frozenset({Reason.NODE_FAILURE, Reason.EVICTED, Reason.NODE_UNHEALTHY})
PREEMPTION_REASONS = frozenset({Reason.PREEMPTED})
APPLICATION_REASONS = frozenset({Reason.WORKER_FAILED, Reason.STALLED})


class QueueConditionType(StrEnum):
    """Conditions of `status.queueing`, written only by the admission writer."""

    QUOTA_RESERVED = "QuotaReserved"
    EVICTED = "Evicted"
    PREEMPTED = "Preempted"
    REQUEUED = "Requeued"


class QueueReason(StrEnum):
    """Why a job waits for quota, or lost it: one reason per job, in this precedence."""

    # pending, highest precedence first (the order `PENDING_PRECEDENCE` keeps)
    DEACTIVATED = "Deactivated"  # requeued too often after its gang was not ready in time
    MISCONFIGURED = "Misconfigured"  # no such LocalQueue or ClusterQueue, or not for this namespace
    STOPPED = "Suspended"  # the queue's stopPolicy holds it
    BACKOFF_REQUEUE = "BackoffRequeue"  # waiting out the backoff after an eviction
    EXCEEDS_MAX_QUOTA = "ExceedsMaxQuota"  # more than the queue could ever hold
    WAITING_FOR_PREEMPTED = "WaitingForPreemptedWorkloads"  # victims are saving and leaving
    WAITING_FOR_QUOTA = "WaitingForQuota"
    PENDING_EVALUATION = "PendingEvaluation"  # the admission writer has not decided yet
    # admitted
    QUOTA_RESERVED = "QuotaReserved"
    WAITING_FOR_PODS_READY = "WaitingForPodsReady"
    # evictions
    PREEMPTED = "Preempted"
    PODS_READY_TIMEOUT = "PodsReadyTimeout"
    CLUSTER_QUEUE_STOPPED = "ClusterQueueStopped"
    # whose preemption it was
    IN_CLUSTER_QUEUE = "InClusterQueue"
    IN_COHORT_RECLAMATION = "InCohortReclamation"
    # the victim left; its quota is free and it waits again
    REQUEUED = "Requeued"


PENDING_PRECEDENCE = (
    QueueReason.DEACTIVATED,
    QueueReason.MISCONFIGURED,
    QueueReason.STOPPED,
    QueueReason.BACKOFF_REQUEUE,
    QueueReason.EXCEEDS_MAX_QUOTA,
    QueueReason.WAITING_FOR_PREEMPTED,
    QueueReason.WAITING_FOR_QUOTA,
    QueueReason.PENDING_EVALUATION,
)
