"""The embedded platform's one queue, with `carina up` and stand-in workers (real processes).

The machine is told it has 2 CPUs: two gangs of 2 workers × 1 CPU do not fit together. A gang
that waits runs when the one ahead finishes; a higher-priority gang preempts a running one,
whose workers save a checkpoint on SIGTERM and say so; the victim resumes from that step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, wait_for, wait_for_phase, wait_for_step

NS = "default"


def job(name: str, steps: int, **spec: Any) -> dict[str, Any]:
    return dict(
        make_job(name)
        .with_replicas(2)
        .with_quick_pretrain(steps)
        .with_spec(
            resources={"cpu": "1", "memory": "64Mi"},
            checkpoint={"intervalSteps": 10, "keep": 2},
            failurePolicy={"backoffSeconds": 0},
            **spec,
        )
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_gangs_queue_in_turn_and_a_higher_priority_one_preempts_with_a_checkpoint(
    tmp_path: Path,
) -> None:
    up = CarinaUp(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"CARINA_CAPACITY_CPUS": "2", "STANDIN_STEP_SECONDS": "0.05"},
    ).start()
    try:
        client = up.client()
        client.create(NS, job("low", steps=400))
        wait_for_step(client, "low", 30, 60)
        client.create(NS, job("next", steps=20))
        waiting = wait_for(
            lambda: (
                q
                if (q := (client.get(NS, "next").get("status") or {}).get("queueing") or {}).get(
                    "reason"
                )
                == "WaitingForQuota"
                else None
            ),
            30,
            "next to wait for quota",
        )
        assert "needs 2 CPUs, 0 available to this-machine now" in waiting["message"]
        assert waiting["position"] == 1
        assert client.get(NS, "next")["status"]["phase"] == "Queued"

        # A higher priority takes the machine: "low" saves on SIGTERM, then "high" runs.
        client.create(NS, job("high", steps=20, priority=10))
        high = wait_for_phase(client, "high", ["Running", "Succeeded"], 60)
        low = client.get(NS, "low")["status"]
        assert low["phase"] == "Queued"
        preempted = condition(low["queueing"], "Preempted")
        assert preempted["reason"] == "InClusterQueue"
        assert "preempted by default/high (priority 10)" in preempted["message"]
        reasons = [e["reason"] for e in client.events(NS, "low")]
        assert "Preempted" in reasons
        assert "CheckpointSaved" in reasons
        saved = condition(low, "Checkpointed")
        assert saved["reason"] == "CheckpointSaved", low
        step = low["lastCheckpoint"]["step"]
        assert step >= 30
        assert high["status"]["queueing"]["priority"] == 10

        # "high" finishes; "low" (older than "next") resumes from its checkpoint and finishes;
        # then "next" runs.
        wait_for_phase(client, "high", ["Succeeded"], 60)
        low = wait_for_phase(client, "low", ["Succeeded"], 120)["status"]
        nxt = wait_for_phase(client, "next", ["Succeeded"], 60)["status"]
        assert nxt["startTime"] >= low["completionTime"]
        log = client.logs(NS, "low", 0, tail=10000)
        resumed = [line for line in log.splitlines() if "resum" in line.lower()]
        assert resumed, log[-2000:]
        assert f"{step}" in " ".join(resumed)
    finally:
        up.stop()
