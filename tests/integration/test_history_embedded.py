"""Job history on the embedded platform: `carina up` with stand-in workers (real processes).

A job that finished and was deleted by its TTL, and one a user deleted while it ran, are
still in `carina history` afterwards: final status, loss curve, events and each worker's log
tail, read from the history the substrate wrote just before it removed them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from builders import make_job
from embedded_platform import STANDIN_WORKER, running, wait_for, wait_for_step
from typer.testing import CliRunner

from carina.platform.cli.client import ApiError, CarinaClient
from carina.platform.cli.main import app

NS = "default"


def standin_job(name: str, steps: int, **spec: Any) -> dict[str, Any]:
    return dict(
        make_job(name)
        .with_replicas(2)
        .with_labels({"team": "nlp"})
        .with_quick_pretrain(steps)
        .with_spec(
            resources={"cpu": "100m", "memory": "64Mi"},
            failurePolicy={"backoffSeconds": 0},
            **spec,
        )
    )


def gone(client: CarinaClient, name: str) -> bool:
    try:
        client.get(NS, name)
    except ApiError as exc:
        return exc.status == 404
    return False


def carina(url: str, token: str, *args: str) -> str:
    env = {"CARINA_SERVER": url, "CARINA_TOKEN": token, "CARINA_NAMESPACE": NS, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["history", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_job_deleted_by_its_ttl_keeps_its_loss_curve_and_log_tails(tmp_path: Path) -> None:
    env = {"STANDIN_STEP_SECONDS": "0.1"}
    with running(tmp_path / "state", STANDIN_WORKER, env=env) as up:
        client = up.client()
        created = client.create(NS, standin_job("brief", steps=30, ttlSecondsAfterFinished=1))
        uid = created["metadata"]["uid"]
        wait_for(lambda: gone(client, "brief"), 90, "brief to be deleted by its TTL")
        token = (up.state_dir / "token").read_text().strip()

        [summary] = client.history(NS)["items"]
        assert (summary["uid"], summary["name"], summary["phase"]) == (uid, "brief", "Succeeded")
        assert summary["labels"] == {"team": "nlp"}
        assert summary["finishedAt"]
        assert summary["deletedAt"]
        assert summary["finishedAt"] <= summary["deletedAt"]
        assert summary["finalStep"] == 30

        record = client.history_record(NS, uid)
        assert record["status"]["phase"] == "Succeeded"
        assert any(c["type"] == "Succeeded" and c["status"] == "True" for c in record["conditions"])
        assert record["events"], "the job's events are kept"
        loss = record["metrics"]["loss"]
        assert len(loss) >= 2
        assert loss[0][0] < loss[-1][0]
        assert loss[-1][1] < loss[0][1]
        assert set(record["logs"]) == {"0", "1"}
        assert "step 30" in record["logs"]["0"]

        table = carina(up.url, token)
        assert re.search(r"brief\s+Succeeded", table)
        shown = carina(up.url, token, "brief")
        assert "Phase:      Succeeded" in shown
        assert "Loss curve:" in shown
        assert "--- worker 1 log (tail)" in shown
        assert "step 30" in shown
        by_uid = carina(up.url, token, uid)
        assert f"UID:        {uid}" in by_uid


def test_a_job_deleted_while_it_runs_is_recorded_as_it_was(tmp_path: Path) -> None:
    with running(tmp_path / "state", STANDIN_WORKER, env={"STANDIN_STEP_SECONDS": "0.1"}) as up:
        client = up.client()
        created = client.create(NS, standin_job("cut-short", steps=2000))
        wait_for_step(client, "cut-short", 5, 60)
        client.delete(NS, "cut-short")
        wait_for(lambda: gone(client, "cut-short"), 90, "cut-short to be deleted")
        record = client.history_record(NS, created["metadata"]["uid"])
        assert record["phase"] == "Running"
        assert record["finishedAt"] is None
        assert record["deletedAt"] is not None
        assert record["finalStep"] >= 5
        assert "step 5" in record["logs"]["0"]
        failed = client.history(NS, phase="Failed")
        assert failed["items"] == []
