"""`carina up` against bad input: one job's broken spec never stops the others.

A real `carina up` with the stand-in worker (see test_server_local.py). Jobs with a spec the
models refuse can only come from an older version's database, so the test writes them
straight to the store, as such a version would have.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, running, wait_for_phase

from carina.platform.cli.client import ApiError
from carina.platform.embedded.store import Store

NS = "default"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"STANDIN_STEP_SECONDS": "0.02", "CARINA_CAPACITY_CPUS": "4"},
    ) as up:
        yield up


def store_directly(platform: CarinaUp, name: str, **spec: Any) -> None:
    job = make_job(name).with_spec(**spec)
    Store(platform.state_dir / "carina.db").create_job(NS, dict(job), time.time())


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"resources": {"cpu": "abc"}}, "spec.resources.cpu"),
        ({"resources": {"memory": "-1Gi"}}, "spec.resources.memory"),
        ({"replicas": True}, "spec.replicas"),
    ],
)
def test_a_stored_job_with_a_bad_spec_fails_and_another_still_succeeds(
    platform: CarinaUp, spec: dict[str, Any], field: str
) -> None:
    client = platform.client()
    store_directly(platform, "broken", **spec)
    client.create(NS, make_job("fine"))
    job = wait_for_phase(client, "fine", ["Succeeded", "Failed"], 60)
    assert job["status"]["phase"] == "Succeeded"
    broken = wait_for_phase(client, "broken", ["Failed"], 30)
    failed = next(c for c in broken["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert field in failed["message"]
    assert "InvalidSpec" in [e["reason"] for e in client.events(NS, "broken")]
    client.delete(NS, "broken")

    def gone() -> bool:
        try:
            client.get(NS, "broken")
        except ApiError as exc:
            return exc.status == 404
        return False

    deadline = time.monotonic() + 30
    while not gone():
        assert time.monotonic() < deadline, "the broken job was never deleted"
        time.sleep(0.2)


def test_the_api_refuses_what_once_stopped_every_job(platform: CarinaUp) -> None:
    client = platform.client()
    for spec in ({"resources": {"cpu": "abc"}}, {"replicas": True}):
        with pytest.raises(ApiError) as info:
            client.create(NS, make_job("bad").with_spec(**spec))
        assert info.value.status == 422
