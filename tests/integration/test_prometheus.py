"""A real Prometheus server scrapes a loopback target and answers PromQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from carina.testcluster import PrometheusServer

pytestmark = pytest.mark.prometheus

METRICS = b"""# HELP carina_test_steps_total Steps a fake worker has taken.
# TYPE carina_test_steps_total counter
carina_test_steps_total{job_name="demo",namespace="team-a"} 42
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def metrics_target() -> Iterator[str]:
    """A loopback /metrics endpoint; yields its host:port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_prometheus_scrapes_a_loopback_target_and_answers_promql(
    prometheus: PrometheusServer, metrics_target: str
) -> None:
    prometheus.add_targets("fake-worker", [metrics_target])
    try:
        [sample] = prometheus.wait_for_query("sum by (namespace) (carina_test_steps_total)")
        assert sample["metric"] == {"namespace": "team-a"}
        assert float(sample["value"][1]) == 42
        [up] = prometheus.query('up{job="fake-worker"}')
        assert up["value"][1] == "1"
    finally:
        prometheus.remove_job("fake-worker")
