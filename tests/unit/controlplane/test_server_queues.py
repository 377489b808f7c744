"""The queue routes and `carina queues` on the embedded platform: one implicit ClusterQueue,
`this-machine`, the size of the machine, with what the jobs' `status.queueing` says.

The statuses are written into the store as the admission writer would write them; the
substrate is not started (no lifespan), so nothing else writes them meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from builders import make_job
from fastapi.testclient import TestClient
from server_support import ADMIN, ALICE, BOB, auth, make_settings
from typer.testing import CliRunner

from carina.platform.cli import app as cli_app
from carina.platform.cli import jobs as cli_jobs
from carina.platform.cli import queues as cli_queues
from carina.platform.cli.client import CarinaClient
from carina.platform.cli.main import app
from carina.platform.controlplane.backends.embedded import LocalBackend
from carina.platform.controlplane.main import create_app

GIB = float(1 << 30)
QUEUES = "/api/v1/clusterqueues"
LOCAL = "/api/v1/namespaces/{ns}/localqueues"
ADMITTED_AT = "2026-01-01T00:00:00Z"


def _pending(
    reason: str,
    message: str,
    position: int | None,
    priority: int = 0,
    local_queue: str | None = "training",
) -> dict:
    return {
        "phase": "Queued",
        "queueing": {
            "localQueue": local_queue,
            "clusterQueue": "this-machine",
            "priority": priority,
            "reason": reason,
            "message": message,
            "position": position,
        },
    }


def _admitted(gpus: float, memory_gib: float, phase: str = "Running") -> dict:
    return {
        "phase": phase,
        "queueing": {
            "localQueue": "training",
            "clusterQueue": "this-machine",
            "admission": {
                "clusterQueue": "this-machine",
                "usage": {"nvidia.com/gpu": gpus, "cpu": 2, "memory": memory_gib * GIB},
                "admittedAt": ADMITTED_AT,
            },
            "reason": "QuotaReserved",
            "message": "admitted to ClusterQueue this-machine",
        },
    }


# namespace, name, spec.queue, the status the admission writer wrote
JOBS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    ("team-a", "a-running", "training", _admitted(4, 16)),
    ("team-a", "a-waiting", "training", _pending("WaitingForQuota", "needs 8 GPUs; 4 free", 2)),
    ("team-b", "b-waiting", "training", _pending("WaitingForQuota", "next: 4 GPUs", 1, 100)),
    (
        "team-b",
        "b-too-big",
        None,
        _pending(
            "ExceedsMaxQuota",
            "asks for 16 nvidia.com/gpu; the machine has 8",
            None,
            local_queue=None,
        ),
    ),
    # Finished: its stale admission holds nothing and it waits for nothing.
    ("team-a", "a-done", "training", _admitted(8, 8, phase="Succeeded")),
]


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    settings = make_settings(tmp_path, capacity_gpus=8, capacity_memory="64Gi")
    backend = LocalBackend(settings)
    for ns, name, queue, status in JOBS:
        manifest = make_job(name) if queue is None else make_job(name).with_spec(queue=queue)
        manifest["metadata"]["namespace"] = ns
        row = backend.store.create_job(ns, dict(manifest), 0.0)
        backend.store.write_status(row.uid, status)
    return backend


@pytest.fixture
def api(backend: LocalBackend) -> TestClient:
    # No `with`: the lifespan (and so the substrate) does not start.
    return TestClient(create_app(backend.settings, backend), raise_server_exceptions=False)


def test_the_embedded_platform_has_one_cluster_queue_the_size_of_the_machine(
    api: TestClient,
) -> None:
    resp = api.get(QUEUES, headers=auth(BOB))
    assert resp.status_code == 200, resp.text
    [queue] = resp.json()["items"]
    assert queue["name"] == "this-machine"
    assert queue["strategy"] == "StrictFIFO"
    assert queue["cohort"] is None
    resources = {r["name"]: r for r in queue["resources"]}
    assert resources["nvidia.com/gpu"]["nominal"] == 8
    assert resources["nvidia.com/gpu"]["reserved"] == 4  # a-done's admission is not counted
    assert resources["memory"]["nominal"] == 64 * GIB
    assert resources["memory"]["reserved"] == 16 * GIB
    assert (queue["admittedJobs"], queue["pendingJobs"]) == (1, 3)


def test_a_cluster_queue_lists_its_pending_jobs_in_order_with_why(api: TestClient) -> None:
    resp = api.get(f"{QUEUES}/this-machine", headers=auth(ADMIN))
    assert resp.status_code == 200, resp.text
    pending = resp.json()["pending"]
    assert [(p["namespace"], p["name"], p["position"]) for p in pending] == [
        ("team-b", "b-waiting", 1),
        ("team-a", "a-waiting", 2),
        ("team-b", "b-too-big", None),
    ]
    first = pending[0]
    assert (first["reason"], first["message"], first["priority"]) == (
        "WaitingForQuota",
        "next: 4 GPUs",
        100,
    )
    assert pending[2]["reason"] == "ExceedsMaxQuota"
    assert pending[2]["localQueue"] is None


def test_pending_jobs_of_other_tenants_are_counted_but_not_named(api: TestClient) -> None:
    body = api.get(f"{QUEUES}/this-machine", headers=auth(ALICE)).json()
    assert body["pendingJobs"] == 3
    assert [p["name"] for p in body["pending"]] == ["a-waiting"]


def test_an_unknown_cluster_queue_is_404_naming_the_queues_there_are(api: TestClient) -> None:
    resp = api.get(f"{QUEUES}/team-a", headers=auth(ADMIN))
    assert resp.status_code == 404
    detail = resp.json()["detail"]
    assert detail["reason"] == "NotFound"
    assert "ClusterQueue team-a not found" in detail["message"]
    assert "this-machine" in detail["message"]


def test_a_queue_name_that_cannot_be_one_is_422(api: TestClient) -> None:
    resp = api.get(f"{QUEUES}/Not_A_Name", headers=auth(ADMIN))
    assert resp.status_code == 422


def test_local_queues_are_those_a_namespace_s_jobs_wait_in(api: TestClient) -> None:
    resp = api.get(LOCAL.format(ns="team-a"), headers=auth(ALICE))
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"] == [
        {
            "namespace": "team-a",
            "name": "training",
            "clusterQueue": "this-machine",
            "stopPolicy": "None",
            "pendingJobs": 1,
            "admittedJobs": 1,
        }
    ]
    # A job that names no queue waits in `default`.
    team_b = api.get(LOCAL.format(ns="team-b"), headers=auth(BOB)).json()["items"]
    assert {(q["name"], q["pendingJobs"]) for q in team_b} == {("default", 1), ("training", 1)}
    assert api.get(LOCAL.format(ns="empty"), headers=auth(ADMIN)).json()["items"] == []


def test_local_queues_of_another_tenant_are_forbidden(api: TestClient) -> None:
    resp = api.get(LOCAL.format(ns="team-b"), headers=auth(ALICE))
    assert resp.status_code == 403
    assert resp.json()["detail"]["message"] == "alice may not list localqueues in namespace team-b"


@pytest.mark.parametrize("path", [QUEUES, f"{QUEUES}/this-machine", LOCAL.format(ns="team-a")])
def test_queue_routes_need_a_valid_token(api: TestClient, path: str) -> None:
    assert api.get(path).status_code == 401
    assert api.get(path, headers=auth("not-a-token")).status_code == 401


# -- the CLI over the same routes ------------------------------------------------------------


@pytest.fixture
def cli(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner whose commands reach `api` as the admin, on a wide console."""

    def client_for(_server: str | None, _token: str | None) -> CarinaClient:
        client = CarinaClient("http://carina.test")
        client.http = TestClient(api.app, headers=auth(ADMIN), raise_server_exceptions=False)
        return client

    monkeypatch.setattr(cli_queues, "client_for", client_for)
    monkeypatch.setattr(cli_jobs, "client_for", client_for)
    monkeypatch.setattr(cli_app.out, "_width", 200)
    return CliRunner()


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def test_carina_queues_lists_reserved_of_nominal_per_resource(cli: CliRunner) -> None:
    result = cli.invoke(app, ["queues"])
    assert result.exit_code == 0, result.output
    header, row = _rows(result.stdout)
    assert header == [
        "NAME", "COHORT", "STRATEGY", "GPUS", "CPU", "MEMORY", "ADMITTED", "PENDING",
    ]  # fmt: skip
    assert row[0] == "this-machine"
    assert row[3] == "4/8"  # GPUs reserved/nominal
    assert row[5] == "16Gi/64Gi"
    assert row[-2:] == ["1", "3"]


def test_carina_queues_show_names_each_pending_job_and_why(cli: CliRunner) -> None:
    result = cli.invoke(app, ["queues", "show", "this-machine"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Strategy:    StrictFIFO" in text
    assert "Pending:     3 job(s)" in text
    lines = [line.split() for line in text.splitlines()]
    gpu = next(line for line in lines if line[:1] == ["nvidia.com/gpu"])
    assert gpu[1:4] == ["8", "4", "0"]
    jobs = [line for line in lines if line and line[0] in ("1", "2", "-") and len(line) > 2]
    assert [line[1] for line in jobs] == [
        "team-b/b-waiting",
        "team-a/a-waiting",
        "team-b/b-too-big",
    ]
    assert jobs[0][3:6] == ["100", "WaitingForQuota", "next:"]
    assert "ExceedsMaxQuota" in jobs[2]


def test_carina_queues_show_of_an_unknown_queue_says_so_and_exits_1(cli: CliRunner) -> None:
    result = cli.invoke(app, ["queues", "show", "team-z"])
    assert result.exit_code == 1
    assert "404 NotFound" in result.stderr
    assert "ClusterQueue team-z not found" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_carina_queues_output_json_is_the_api_s_answer(cli: CliRunner) -> None:
    result = cli.invoke(app, ["queues", "show", "this-machine", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert '"name": "this-machine"' in result.stdout
    assert '"reason": "ExceedsMaxQuota"' in result.stdout


def test_carina_queues_local_lists_a_namespace_s_queues(cli: CliRunner) -> None:
    result = cli.invoke(app, ["queues", "local", "-n", "team-a"])
    assert result.exit_code == 0, result.output
    assert _rows(result.stdout) == [
        ["NAME", "CLUSTERQUEUE", "PENDING", "ADMITTED"],
        ["training", "this-machine", "1", "1"],
    ]


def test_carina_list_and_get_show_each_job_s_queue_and_reason(cli: CliRunner) -> None:
    result = cli.invoke(app, ["list", "-n", "team-b"])
    assert result.exit_code == 0, result.output
    header, *rows = _rows(result.stdout)
    assert header[-3:] == ["QUEUE", "REASON", "AGE"]
    by_name = {row[0]: row for row in rows}
    assert by_name["b-waiting"][-3:-1] == ["training", "WaitingForQuota"]
    assert by_name["b-too-big"][-3:-1] == ["-", "ExceedsMaxQuota"]
    got = cli.invoke(app, ["get", "a-running", "-n", "team-a"])
    assert got.exit_code == 0, got.output
    assert _rows(got.stdout)[1][-3:-1] == ["training", "QuotaReserved"]
