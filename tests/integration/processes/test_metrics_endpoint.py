"""Rank 0's /metrics served over HTTP on loopback: the text the registry holds, on the wire.

What the text says (names, labels, values) is tested without a socket in
tests/unit/workloads/test_pretrain_telemetry.py.
"""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client import generate_latest

from carina.testcluster.processes import wait_until
from carina.workloads import metric_names as names
from carina.workloads.runtime.checkpoint_refs import CheckpointRef
from carina.workloads.runtime.telemetry import Telemetry

DEADLINE = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_endpoint_serves_what_the_registry_holds() -> None:
    port = free_port()
    t = Telemetry("job-a", "team-a", 0, total_steps=10, port=port)
    bodies: list[str] = []

    def fetch() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            bodies.append(resp.read().decode())
        return True

    try:
        t.on_step(3, loss=2.5, lr=1e-3, tokens=512, tokens_per_second=1000.0, mfu=0.4)
        t.on_checkpoint(CheckpointRef(3, "s3://b/job-a/step-00000003"), seconds=1.5)
        wait_until(fetch, DEADLINE, f"rank 0's /metrics on port {port}", interval=0.05)
        expected = generate_latest(t.registry).decode()
    finally:
        t.close()
    assert t.server is None  # close() stopped it (run_workload closes every workload)
    labels = 'job="job-a",namespace="team-a",rank="0"'
    body = bodies[-1]
    assert f"{names.WORKER_STEP}{{{labels}}} 3.0" in body
    assert f"{names.CHECKPOINT_LAST_STEP}{{{labels}}} 3.0" in body
    served = {line for line in body.splitlines() if not line.startswith("#")}
    held = {line for line in expected.splitlines() if not line.startswith("#")}
    assert served == held
