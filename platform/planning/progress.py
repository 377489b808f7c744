"""Progress from rank 0's Prometheus endpoint: a pure parser of the text exposition format.

The operator scrapes `http://<rank-0 pod IP>:<CARINA_METRICS_PORT>/metrics` (see
docs/architecture.md, "Operator"); this module turns the text into `status.progress`, and the
checkpoint gauge into `status.lastCheckpoint`, so every completed save (periodic, final or on
SIGTERM) reaches the job's status, not only the one a preempted worker acknowledges.
"""

from __future__ import annotations

import math
from datetime import datetime

from carina.platform.api.types import CheckpointStatus, Progress
from carina.workloads import metric_names as names
from carina.workloads.contract import checkpoint_step_uri

_WANTED = {
    names.WORKER_STEP: "step",
    names.WORKER_TOTAL_STEPS: "total_steps",
    names.WORKER_LOSS: "loss",
    names.WORKER_TOKENS_PER_SECOND: "tokens_per_second",
    names.CHECKPOINT_LAST_STEP: "checkpoint_step",
}


def parse_metrics(text: str) -> dict[str, float]:
    """The first sample of each wanted metric (`name{labels} value [ts]` lines)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        cut = brace if 0 <= brace < space else space
        if cut < 0:
            continue
        metric = line[:cut]
        if metric not in _WANTED or _WANTED[metric] in found:
            continue
        rest = line[line.rfind("}") + 1 :] if brace == cut else line[cut:]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            found[_WANTED[metric]] = value
    return found


def parse_progress(text: str, now: datetime) -> Progress | None:
    """Progress from a worker's /metrics text, or None when it exports no step yet."""
    values = parse_metrics(text)
    if "step" not in values:
        return None
    return Progress(
        step=int(values["step"]),
        total_steps=int(values.get("total_steps", 0)),
        loss=values.get("loss"),
        tokens_per_second=values.get("tokens_per_second"),
        updated_at=now,
    )


def parse_checkpoint_step(text: str) -> int | None:
    """The step of the newest complete checkpoint a worker reports, or None before the first.

    The gauge reads 0 until a save completes (or a resume loads one); no save happens at step 0.
    """
    step = int(parse_metrics(text).get("checkpoint_step", 0))
    return step if step > 0 else None


def newer_checkpoint(
    last: CheckpointStatus | None, step: int, root: str, when: datetime
) -> CheckpointStatus | None:
    """The checkpoint of `step` under the job's checkpoint root, if newer than `last`."""
    if last is not None and last.step >= step:
        return None
    return CheckpointStatus(step=step, uri=checkpoint_step_uri(root, step), time=when)
