"""The embedded substrate scrapes a live worker's /metrics: real processes, real sockets.

Worker processes (the stand-in worker under the real entry process and launcher) serve their
progress gauges on the port the substrate gave worker 0; the substrate's passes read it into
status and the sample store while they run, and take the final step from rank 0's
termination message once they have exited.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builders import make_job
from embedded_platform import STANDIN_WORKER

from carina.platform.embedded.launcher import Launcher
from carina.platform.embedded.store import Store
from carina.platform.embedded.substrate import Substrate, SubstrateConfig
from carina.platform.planning.admission import Capacity

STEPS = 40


def status(store: Store) -> dict[str, Any]:
    row = store.get_job("default", "llm")
    assert row is not None
    result: dict[str, Any] = json.loads(row.status)
    return result


def test_the_embedded_substrate_reads_progress_from_rank_zeros_metrics_endpoint(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "carina.db")
    launcher = Launcher(STANDIN_WORKER, base_env={"STANDIN_STEP_SECONDS": "0.1"})
    config = SubstrateConfig(state_dir=tmp_path, capacity=Capacity(cpus=8, memory_bytes=2**36))
    substrate = Substrate(Store(store.path), launcher, config)
    job = make_job("llm").with_replicas(2).with_pretrain(steps=STEPS)
    uid = store.create_job("default", dict(job.with_spec(checkpoint={"intervalSteps": 10})), 0).uid
    seen: list[int] = []  # status.progress.step while the workers ran
    deadline = time.monotonic() + 120
    try:
        while status(store).get("phase") not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, status(store)
            substrate.reconcile_all(datetime.now(UTC))
            step = (status(store).get("progress") or {}).get("step")
            if step is not None and status(store)["phase"] == "Running":
                seen.append(step)
            time.sleep(0.1)
    finally:
        substrate.shutdown(stop_workers=True)
    final = status(store)
    assert final["phase"] == "Succeeded", final
    # While running, the steps came from the endpoint, rising, before the end.
    assert seen
    assert seen == sorted(seen)
    assert 0 < seen[0] < STEPS
    sampled = [s.step for s in store.samples(uid)]  # the series the API serves
    assert len(sampled) >= 2
    assert sampled == sorted(sampled)
    assert set(seen) <= set(sampled)
    # The end: the final word, from rank 0's termination message.
    assert final["progress"]["step"] == STEPS
    assert final["progress"]["totalSteps"] == STEPS
    assert final["lastCheckpoint"]["step"] == STEPS
    assert final["lastCheckpoint"]["uri"].endswith("/step-00000040")
