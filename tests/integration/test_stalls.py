"""Hangs and stragglers through the operator, on a real control plane with kwok's fake nodes.

kwok's pod IPs lead nowhere, so the operator scrapes a local stand-in for rank 0's /metrics
(CARINA_OPERATOR_PROGRESS_URL), whose step advances or stops as the test says and whose
per-rank step times make one rank slow. A job whose step stops advancing gets the Stalled
condition, a Warning event and a restart counted as application; a slow rank is named with
its node in status.stragglers, announced by a Straggler event, exported as
carina_job_straggler, and its Node is annotated for a full health check.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_operator import (
    TIMEOUT,
    OperatorProcess,
    apply,
    cpu_job,
    job_status,
    pods,
)

from carina.platform.api.health import CHECK_REQUESTED_ANNOTATION
from carina.testcluster import TestCluster
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s

STEP_SECONDS = 0.1


class Feed:
    """Rank 0's /metrics as a test wants it: a step that advances (or not), per-rank times."""

    def __init__(self) -> None:
        self.step = 1
        self.advancing = True
        self.rank_seconds: dict[int, float] = {}
        self._lock = threading.Lock()
        feed = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = feed.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{{namespace}}/{{job}}/metrics"

    def text(self) -> str:
        with self._lock:
            lines = [
                f'carina_worker_step{{rank="0"}} {self.step}',
                'carina_worker_total_steps{rank="0"} 100000',
                f'carina_worker_loss{{rank="0"}} {5.0 / self.step}',
                f'carina_worker_step_seconds{{rank="0"}} {STEP_SECONDS}',
            ]
            lines += [
                f'carina_worker_rank_step_seconds{{rank="{r}"}} {t}'
                for r, t in sorted(self.rank_seconds.items())
            ]
        return "\n".join(lines) + "\n"

    def _tick(self) -> None:
        while not self._stop.wait(STEP_SECONDS):
            with self._lock:
                if self.advancing:
                    self.step += 1

    def start(self) -> Feed:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._tick, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed().start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def scraping(k8s_cluster, namespace, tmp_path: Path, feed: Feed) -> Iterator[OperatorProcess]:
    """An operator that scrapes the feed every 0.3 s."""
    op = OperatorProcess(
        k8s_cluster,
        namespace,
        tmp_path / "operator.log",
        CARINA_OPERATOR_PROGRESS_INTERVAL="0.3",
        CARINA_OPERATOR_PROGRESS_URL=feed.url,
    ).start()
    try:
        yield op
    finally:
        op.stop()
        print(f"--- operator log (tail)\n{op.log_tail()}")


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def events(cluster: TestCluster, ns: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.get_json("events", "-n", ns)["items"]
    return [e for e in items if e["reason"] == reason]


def wait_status(cluster: TestCluster, ns: str, name: str, what: str, check, op: OperatorProcess):
    """Wait until `check(status)` holds; the status then."""
    seen: dict[str, Any] = {}

    def holds() -> bool:
        seen.clear()
        seen.update(job_status(cluster, ns, name))
        return bool(check(seen))

    try:
        wait_until(holds, TIMEOUT, what, interval=0.2, alive=op._alive)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last status: {seen}\n{op.log_tail()}") from None
    return dict(seen)


def test_a_step_that_stops_advancing_stalls_the_job_and_restarts_it_as_application(
    k8s_cluster, namespace, scraping, feed
):
    stall = {"factor": 3, "minSeconds": 2, "startupSeconds": 600}
    apply(k8s_cluster, cpu_job("hung", namespace, failurePolicy={"stall": stall}))
    wait_status(
        k8s_cluster, namespace, "hung", "stepping",
        lambda s: (s.get("progress") or {}).get("step", 0) > 3, scraping,
    )  # fmt: skip
    feed.advancing = False
    frozen_at = feed.step

    status = wait_status(
        k8s_cluster, namespace, "hung", "restarted after a stall",
        lambda s: s.get("restarts") == 1, scraping,
    )  # fmt: skip
    stalled = conditions(status)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "Stalled")
    assert f"after step {frozen_at}" in stalled["message"]
    assert "median step time is 0.1s" in stalled["message"]
    assert "3 x the median" in stalled["message"]
    assert status["restartsByReason"] == {"application": 1, "infrastructure": 0, "preemption": 0}
    warned = events(k8s_cluster, namespace, "Stalled")
    assert warned
    assert {e["type"] for e in warned} == {"Warning"}
    assert any(f"after step {frozen_at}" in e["message"] for e in warned)

    # The restarted gang steps again: Stalled turns False.
    feed.advancing = True
    status = wait_status(
        k8s_cluster, namespace, "hung", "Stalled False",
        lambda s: conditions(s).get("Stalled", {}).get("status") == "False", scraping,
    )  # fmt: skip
    assert conditions(status)["Stalled"]["reason"] == "Stepping"
    assert status["phase"] == "Running"
    assert status["restarts"] == 1


def straggler_series(op: OperatorProcess, job: str) -> list[str]:
    return [
        line
        for line in op.metrics().splitlines()
        if line.startswith("carina_job_straggler{") and f'job="{job}"' in line
    ]


def test_a_slow_rank_is_named_with_its_node_announced_exported_and_its_node_checked(
    k8s_cluster, namespace, scraping, feed
):
    feed.rank_seconds = {0: 0.20, 1: 0.21, 2: 0.55, 3: 0.20}
    apply(k8s_cluster, cpu_job("uneven", namespace, replicas=4))
    status = wait_status(
        k8s_cluster, namespace, "uneven", "status.stragglers",
        lambda s: s.get("stragglers"), scraping,
    )  # fmt: skip
    [worker2] = [p for p in pods(k8s_cluster, namespace, "uneven") if p["metadata"]["labels"][
        "carina.dev/index"] == "2"]  # fmt: skip
    node = worker2["spec"]["nodeName"]
    try:
        assert status["stragglers"] == [
            {"rank": 2, "worker": 2, "node": node, "stepSeconds": 0.55, "medianSeconds": 0.2}
        ]
        wait_until(
            lambda: events(k8s_cluster, namespace, "Straggler"), TIMEOUT, "a Straggler event"
        )
        [event] = events(k8s_cluster, namespace, "Straggler")
        assert event["type"] == "Warning"
        assert f"rank 2 (worker 2 on node {node})" in event["message"]
        assert straggler_series(scraping, "uneven") == [
            f'carina_job_straggler{{job="uneven",namespace="{namespace}",node="{node}",'
            f'rank="2"}} 1.0'
        ]

        def annotated() -> str | None:
            meta = k8s_cluster.get_json("node", node)["metadata"]
            return (meta.get("annotations") or {}).get(CHECK_REQUESTED_ANNOTATION)

        wait_until(annotated, TIMEOUT, f"{node} annotated for a health check")
        assert time.strptime(str(annotated()), "%Y-%m-%dT%H:%M:%SZ")  # when it was asked

        # The rank catches up: it is no longer named, and its series goes.
        feed.rank_seconds = {0: 0.20, 1: 0.21, 2: 0.20, 3: 0.20}
        wait_status(
            k8s_cluster, namespace, "uneven", "no stragglers",
            lambda s: "stragglers" not in s, scraping,
        )  # fmt: skip
        wait_until(lambda: not straggler_series(scraping, "uneven"), TIMEOUT, "series gone")
        assert len(events(k8s_cluster, namespace, "Straggler")) == 1
    finally:
        # The cluster is shared: give the node back as it was.
        k8s_cluster.kubectl("annotate", "node", node, f"{CHECK_REQUESTED_ANNOTATION}-", check=False)
