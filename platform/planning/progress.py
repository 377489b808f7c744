"""Progress from rank 0's Prometheus endpoint: a pure parser of the text exposition format.

The operator scrapes `http://<rank-0 pod IP>:<CARINA_METRICS_PORT>/metrics` (see
docs/architecture.md, "Operator"); this module turns the text into `status.progress`.
"""

from __future__ import annotations

import math
from datetime import datetime

from carina.platform.api import Progress
from carina.workloads import metric_names as names

_WANTED = {
    names.WORKER_STEP: "step",
    names.WORKER_TOTAL_STEPS: "total_steps",
    names.WORKER_LOSS: "loss",
    names.WORKER_TOKENS_PER_SECOND: "tokens_per_second",
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
