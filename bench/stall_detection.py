"""How soon a stalled job is found, against the stall factor k, on the embedded platform.

Method: one real `carina up` runs stand-in workers (tests/integration/standin_worker.py) that
step every --step-seconds and, in their first generation, stop stepping at step --freeze-at
while still serving /metrics (STANDIN_FREEZE_AT_STEP: a frozen progress feed, as a hung
collective leaves it). For each k a one-worker job with `failurePolicy.stall.factor: k` and
`minSeconds: 1` runs; the script polls rank 0's log every 5 ms for the "frozen at step" line
(the moment the step stopped) and reads, from the job's status, when the Stalled condition
turned True (the substrate's own clock) and when it turned False again (the restarted gang
stepping). Detection is Stalled minus frozen; the rule's limit is k x the median step time
rank 0 reported (`status.progress.stepSeconds`); the overshoot is what the substrate adds (its
pass interval, 0.2 s here, and the scrape). Back to stepping is the restart: SIGTERM, the
new worker's start and resume, its first step. Medians over --runs jobs per k.

    .venv/bin/python bench/stall_detection.py [--runs 3] [--factors 3 5 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from builders import make_job  # noqa: E402
from embedded_platform import STANDIN_WORKER, CarinaUp, wait_for  # noqa: E402

from carina.platform.cli.client import CarinaClient  # noqa: E402

NS = "default"


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == type_),
        None,
    )


def one_job(
    up: CarinaUp, client: CarinaClient, name: str, k: float, freeze_at: int
) -> tuple[float, float, float]:
    """(detection seconds, the rule's limit in seconds, seconds back to stepping)."""
    job = (
        make_job(name)
        .with_pretrain(steps=freeze_at + 40)
        .with_spec(
            checkpoint={"intervalSteps": 5},
            failurePolicy={
                "backoffSeconds": 0,
                "stall": {"factor": k, "minSeconds": 1, "startupSeconds": 600},
            },
        )
    )
    client.create(NS, job)
    logs = up.state_dir / "jobs" / NS
    frozen: float | None = None
    deadline = time.monotonic() + 300
    while frozen is None and time.monotonic() < deadline:
        for log in logs.glob(f"{name}-*/logs/worker-0.log"):
            if "frozen at step" in log.read_text(errors="replace"):
                frozen = time.time()
        time.sleep(0.005)
    assert frozen is not None, f"{name} never froze"
    median = (client.get(NS, name)["status"].get("progress") or {}).get("stepSeconds")

    def stalled(value: str) -> dict[str, Any] | None:
        cond = _condition(client.get(NS, name), "Stalled")
        return cond if cond is not None and cond["status"] == value else None

    found = wait_for(lambda: stalled("True"), 300, f"{name} stalled", interval=0.05)
    again = wait_for(lambda: stalled("False"), 300, f"{name} stepping again", interval=0.05)
    client.delete(NS, name)
    assert median, "no median step time reported"
    detected = _when(found["lastTransitionTime"]) - frozen
    back = _when(again["lastTransitionTime"]) - frozen
    return detected, k * float(median), back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--factors", type=float, nargs="+", default=[3, 5, 10])
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--freeze-at", type=int, default=8)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}; step {args.step_seconds}s, frozen at step"
        f" {args.freeze_at}, minSeconds 1, {args.runs} runs per k"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="carina-stall-") as tmp:
        env = {
            "STANDIN_STEP_SECONDS": str(args.step_seconds),
            "STANDIN_FREEZE_AT_STEP": str(args.freeze_at),
            "CARINA_CAPACITY_CPUS": "4",
        }
        up = CarinaUp(Path(tmp) / "state", STANDIN_WORKER, env=env).start()
        try:
            client = up.client()
            for k in args.factors:
                runs = [
                    one_job(up, client, f"stall-k{int(k)}-{i}", k, args.freeze_at)
                    for i in range(args.runs)
                ]
                detect = statistics.median(r[0] for r in runs)
                limit = statistics.median(r[1] for r in runs)
                back = statistics.median(r[2] for r in runs)
                rows.append((k, limit, detect, detect - limit, back))
        finally:
            up.stop()
    print(
        f"{'k':>4} {'limit k x median (s)':>21} {'detected after (s)':>19}"
        f" {'overshoot (s)':>14} {'stepping again after (s)':>25}"
    )
    for k, limit, detect, over, back in rows:
        print(f"{k:>4g} {limit:>21.2f} {detect:>19.2f} {over:>14.2f} {back:>25.2f}")


if __name__ == "__main__":
    main()
