"""Metric series from PromQL: a real Prometheus scraping real workers of the embedded platform."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_job
from embedded_platform import REAL_WORKER, CarinaUp, wait_for, wait_for_phase, worker_pids

from carina.testcluster import PrometheusServer

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _metrics_port(pid: int) -> str | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"CARINA_METRICS_PORT="):
            return item.split(b"=", 1)[1].decode()
    return None


def test_series_come_from_promql_when_prometheus_is_configured(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    up = CarinaUp(
        tmp_path / "state", REAL_WORKER, env={"CARINA_PROMETHEUS_URL": prometheus.url}
    ).start()
    try:
        client = up.client()
        job = make_job("scraped").with_replicas(2).with_quick_pretrain(400)
        client.create("default", job)
        pids = wait_for(
            lambda: (
                len(worker_pids(up.state_dir, "scraped")) == 2
                and worker_pids(up.state_dir, "scraped")
            ),
            60,
            "two workers",
        )
        targets = [f"127.0.0.1:{_metrics_port(pid)}" for pid in pids]
        prometheus.add_targets("carina-workers", targets)
        try:
            prometheus.wait_for_query('carina_worker_step{exported_job="scraped"} > 0', 60)
            wait_for_phase(client, "scraped", ["Succeeded", "Failed"], 300)
            series = client.metrics("default", "scraped")
        finally:
            prometheus.remove_job("carina-workers")
        assert series["source"] == "prometheus"
        steps = [p["value"] for p in series["step"]]
        assert steps
        assert steps == sorted(steps)
        assert steps[-1] > 0
        assert series["loss"]
        assert series["tokensPerSecond"]
    finally:
        up.stop()
