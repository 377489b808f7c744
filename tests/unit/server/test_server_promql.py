"""PromQL for a job's series: the names workers export, either spelling of the job label."""

from __future__ import annotations

from carina.platform.server import metrics_source
from carina.workloads import metric_names


def test_the_queried_names_are_the_ones_workers_export() -> None:
    assert metrics_source.STEP == metric_names.WORKER_STEP
    assert metrics_source.LOSS == metric_names.WORKER_LOSS
    assert metrics_source.TOKENS_PER_SECOND == metric_names.WORKER_TOKENS_PER_SECOND


def test_a_job_query_accepts_job_or_exported_job() -> None:
    query = metrics_source.job_query("carina_worker_loss", "avg", "team-a", "demo")
    assert query == (
        'avg(carina_worker_loss{namespace="team-a",job="demo"}) or '
        'avg(carina_worker_loss{namespace="team-a",exported_job="demo"})'
    )
