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


class Reason(StrEnum):
    """Why a condition has its status; CamelCase as Kubernetes reasons are."""

    # starting
    CREATED = "Created"
    WORKERS_PENDING = "WorkersPending"
    UNSCHEDULABLE = "Unschedulable"
    WORKERS_STARTING = "WorkersStarting"
    WORKERS_RUNNING = "WorkersRunning"
    # restarts: whose fault, so lost GPU time can be accounted for
    WORKER_FAILED = "WorkerFailed"  # the training code exited with a retryable code
    NODE_FAILURE = "NodeFailure"  # the worker's node went NotReady or disappeared
    EVICTED = "Evicted"  # the kubelet or an API eviction removed the worker
    PREEMPTED = "Preempted"  # the worker saved a checkpoint on SIGTERM and stopped
    # a worker's resume passed over a damaged checkpoint (an event, not a condition)
    CHECKPOINT_CORRUPT = "CheckpointCorrupt"
    # suspension
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    # endings
    SUCCEEDED = "Succeeded"
    PERMANENT_EXIT_CODE = "PermanentExitCode"
    MAX_RESTARTS_EXCEEDED = "MaxRestartsExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INVALID_SPEC = "InvalidSpec"
    # the API server refused a worker pod (or the gang's Service or ConfigMap) as invalid:
    # a template value it checks and the CRD cannot, such as a label key or a volume source
    WORKERS_REFUSED = "WorkersRefused"


# Restart reasons, grouped by the RestartCounts field they increment.
INFRASTRUCTURE_REASONS = frozenset({Reason.NODE_FAILURE, Reason.EVICTED})
PREEMPTION_REASONS = frozenset({Reason.PREEMPTED})
APPLICATION_REASONS = frozenset({Reason.WORKER_FAILED})
