"""PromQL for a job's series: either spelling of the job label."""

from __future__ import annotations

from carina.platform.controlplane import metrics_source


def test_a_job_query_accepts_job_or_exported_job() -> None:
    query = metrics_source.job_query("carina_worker_loss", "avg", "team-a", "demo")
    assert query == (
        'avg(carina_worker_loss{namespace="team-a",job="demo"}) or '
        'avg(carina_worker_loss{namespace="team-a",exported_job="demo"})'
    )
