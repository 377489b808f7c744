"""A job's metric series from Prometheus (PromQL over what the workers export).

Workers label their series job/namespace/rank (carina.workloads.metric_names). A scrape
config without `honor_labels` renames the worker's `job` to `exported_job`, so each query
accepts either spelling.
"""

from __future__ import annotations

import time

import httpx

from carina.platform.controlplane.backend_errors import Unavailable
from carina.platform.controlplane.schemas import MetricSeries, Point
from carina.workloads.metric_names import WORKER_LOSS as LOSS
from carina.workloads.metric_names import WORKER_STEP as STEP
from carina.workloads.metric_names import WORKER_TOKENS_PER_SECOND as TOKENS_PER_SECOND

_MAX_POINTS = 250


def job_query(metric: str, aggregate: str, namespace: str, name: str) -> str:
    """PromQL for one job's series, whichever label the scrape gave the job's name."""
    return " or ".join(
        f'{aggregate}({metric}{{namespace="{namespace}",{label}="{name}"}})'
        for label in ("job", "exported_job")
    )


class PrometheusSource:
    """Range queries against one Prometheus server."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    async def series(
        self, namespace: str, name: str, start: float, end: float | None
    ) -> MetricSeries:
        """Step, loss and tokens/s of one job between `start` and `end` (default: now)."""
        end = end or time.time()
        start = min(start, end)
        step = max(1.0, (end - start) / _MAX_POINTS)
        out = MetricSeries(source="prometheus")
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for field, metric, aggregate in (
                ("step", STEP, "max"),
                ("loss", LOSS, "avg"),
                ("tokens_per_second", TOKENS_PER_SECOND, "max"),
            ):
                params = {
                    "query": job_query(metric, aggregate, namespace, name),
                    "start": f"{start:.3f}",
                    "end": f"{end:.3f}",
                    "step": f"{step:.3f}",
                }
                try:
                    resp = await client.get(f"{self.url}/api/v1/query_range", params=params)
                    resp.raise_for_status()
                    result = resp.json()["data"]["result"]
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    raise Unavailable(f"prometheus at {self.url}: {exc}") from None
                points = [
                    Point(time=float(t), value=float(v))
                    for series in result[:1]
                    for t, v in series["values"]
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                setattr(out, field, points)
        return out
