"""Observing pods: what the operator reads from a Pod, and the worker progress parser."""

from __future__ import annotations

import pytest
from planning_fakes import at

from carina.platform.planning.observed import observe_pod
from carina.platform.planning.progress import parse_progress


def pod(phase="Running", ready=True, labels=None, **status):
    return {
        "metadata": {
            "name": "llm-worker-1",
            "labels": labels or {"carina.dev/index": "1", "carina.dev/restart": "2"},
        },
        "spec": {"nodeName": "vela-0"},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"},
                *status.pop("conditions", []),
            ],
            **status,
        },
    }


def test_running_ready_pod():
    w = observe_pod(pod(startTime="2026-01-01T12:00:00Z"))
    assert (w.index, w.restart, w.phase, w.ready, w.node) == (1, 2, "Running", True, "vela-0")
    assert w.started_at == at(0)
    assert not w.deleting


def test_failed_pod_exit_code_and_termination_message():
    msg = '{"checkpoint": {"step": 10, "uri": "s3://b/x"}}'
    w = observe_pod(
        pod(
            "Failed",
            False,
            containerStatuses=[
                {
                    "state": {
                        "terminated": {
                            "exitCode": 75,
                            "message": msg,
                            "finishedAt": "2026-01-01T12:00:05Z",
                        }
                    }
                }
            ],
        )
    )
    assert (w.phase, w.exit_code, w.termination_message, w.finished_at) == (
        "Failed",
        75,
        msg,
        at(5),
    )


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"reason": "Evicted"}, "Evicted"),
        (
            {
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                    }
                ]
            },
            "NodeLost",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                    }
                ]
            },
            "Preempted",
        ),
        (
            {
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
                ]
            },
            "Unschedulable",
        ),
    ],
)
def test_reasons(extra, reason):
    assert observe_pod(pod("Pending", False, **extra)).reason == reason


def test_deleting_pod():
    p = pod()
    p["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    assert observe_pod(p).deleting


METRICS = """\
# HELP carina_worker_step optimizer steps completed
# TYPE carina_worker_step gauge
carina_worker_step{job="llm",namespace="ns",rank="0"} 120.0
carina_worker_total_steps{job="llm",namespace="ns",rank="0"} 1000
carina_worker_loss{job="llm",namespace="ns",rank="0"} 2.5
carina_worker_tokens_per_second{job="llm",namespace="ns",rank="0"} 15000.5
carina_worker_tokens_total{job="llm",namespace="ns",rank="0"} 1.2e6
"""


def test_progress_from_rank0_metrics():
    p = parse_progress(METRICS, at(1))
    assert (p.step, p.total_steps, p.loss, p.tokens_per_second, p.updated_at) == (
        120,
        1000,
        2.5,
        15000.5,
        at(1),
    )


def test_no_step_no_progress():
    assert parse_progress("# nothing yet\nprocess_cpu_seconds_total 1.0\n", at(1)) is None
