"""GET /api/v1/namespaces/{ns}/history[/{uid}] over the local backend: what each caller sees.

Records are written as the substrate writes them (the backend's history store); a job
deleted through the API is recorded as it was, with its deletion time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from builders import make_job
from fastapi.testclient import TestClient
from server_support import ADMIN, ALICE, BOB, auth, make_settings

from carina.platform.controlplane.backends.embedded import LocalBackend
from carina.platform.controlplane.history_keeping import open_history, prune_once
from carina.platform.controlplane.main import create_app
from carina.platform.history.query import history_query
from carina.platform.history.record import HistoryRecord, record_of
from carina.platform.history.store import HistoryStore

# Recent: the server prunes records older than its retention (30 days) as it starts.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
HISTORY = "/api/v1/namespaces/{ns}/history"


def store_of(client: TestClient) -> HistoryStore:
    app: Any = client.app
    history: HistoryStore = app.state.backend.history
    return history


def finished(
    name: str, minutes: int, namespace: str = "team-a", phase: str = "Succeeded"
) -> HistoryRecord:
    return record_of(
        {
            "metadata": {"uid": f"uid-{namespace}-{name}", "namespace": namespace, "name": name},
            "spec": {"replicas": 1},
            "status": {
                "phase": phase,
                "completionTime": (T0 + timedelta(minutes=minutes)).isoformat(),
                "progress": {"step": 20, "loss": 1.25},
            },
        },
        loss=[(10, 2.0), (20, 1.25)],
        logs={"0": "step 20 loss 1.25\n"},
    )


def test_a_listing_pages_newest_first_in_the_agreed_shape(client: TestClient) -> None:
    for i in range(3):
        store_of(client).put(finished(f"job-{i}", i))
    first = client.get(HISTORY.format(ns="team-a"), params={"limit": 2}, headers=auth(ALICE))
    assert first.status_code == 200, first.text
    body = first.json()
    assert [s["name"] for s in body["items"]] == ["job-2", "job-1"]
    assert set(body["items"][0]) == {
        "uid", "namespace", "name", "phase", "reason", "message", "labels", "queue",
        "createdAt", "startedAt", "finishedAt", "deletedAt", "restarts", "finalStep", "finalLoss",
    }  # fmt: skip
    end = T0 + timedelta(minutes=2)
    assert body["items"][0]["finishedAt"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["items"][0]["finalLoss"] == 1.25
    rest = client.get(
        HISTORY.format(ns="team-a"),
        params={"limit": 2, "continue": body["continue"]},
        headers=auth(ALICE),
    ).json()
    assert [s["name"] for s in rest["items"]] == ["job-0"]
    assert rest["continue"] is None


def test_one_record_has_its_status_metrics_and_log_tail(client: TestClient) -> None:
    store_of(client).put(finished("llm", 1))
    resp = client.get(HISTORY.format(ns="team-a") + "/uid-team-a-llm", headers=auth(ALICE))
    assert resp.status_code == 200, resp.text
    record = resp.json()
    assert record["status"]["phase"] == "Succeeded"
    assert record["metrics"] == {
        "loss": [[10, 2.0], [20, 1.25]],
        "evalLoss": [],
        "tokensPerSecond": None,
        "goodput": None,
    }
    assert record["logs"] == {"0": "step 20 loss 1.25\n"}
    assert record["events"] == []
    assert record["conditions"] == []


def test_a_missing_record_is_404_with_the_error_body(client: TestClient) -> None:
    resp = client.get(HISTORY.format(ns="team-a") + "/no-such-uid", headers=auth(ALICE))
    assert resp.status_code == 404
    assert resp.json()["detail"]["reason"] == "NotFound"


def test_another_namespace_is_403_before_anything_is_looked_up(client: TestClient) -> None:
    store_of(client).put(finished("secret", 1, namespace="team-b"))
    listing = client.get(HISTORY.format(ns="team-b"), headers=auth(ALICE))
    assert listing.status_code == 403
    one = client.get(HISTORY.format(ns="team-b") + "/uid-team-b-secret", headers=auth(ALICE))
    assert one.status_code == 403
    absent = client.get(HISTORY.format(ns="team-b") + "/no-such-uid", headers=auth(ALICE))
    assert absent.status_code == 403  # the same answer: nothing is revealed
    # Nor does a record reach another namespace through its uid.
    cross = client.get(HISTORY.format(ns="team-a") + "/uid-team-b-secret", headers=auth(ALICE))
    assert cross.status_code == 404
    assert client.get(HISTORY.format(ns="team-b"), headers=auth(BOB)).status_code == 200


def test_a_wrong_token_sees_nothing(client: TestClient) -> None:
    store_of(client).put(finished("llm", 1))
    resp = client.get(HISTORY.format(ns="team-a"), headers=auth("not-a-token"))
    assert resp.status_code == 401
    assert "llm" not in resp.text
    assert client.get(HISTORY.format(ns="team-a")).status_code == 401


def test_bad_filters_are_422_naming_the_parameter_and_rule(client: TestClient) -> None:
    for params, path in (
        ({"phase": "Done"}, "phase"),
        ({"since": "last week"}, "since"),
        ({"labelSelector": "team"}, "labelSelector"),
        ({"limit": 0}, "limit"),
        ({"continue": "garbage!"}, "continue"),
    ):
        resp = client.get(HISTORY.format(ns="team-a"), params=params, headers=auth(ALICE))
        assert resp.status_code == 422, (params, resp.text)
        [error] = resp.json()["detail"]["errors"]
        assert error["path"] == path
        assert error["rule"]


def test_a_job_deleted_before_it_finished_is_recorded_as_it_was(client: TestClient) -> None:
    jobs = "/api/v1/namespaces/team-a/trainingjobs"
    created = client.post(jobs, json=make_job("short-lived"), headers=auth(ADMIN))
    assert created.status_code == 201, created.text
    uid = created.json()["metadata"]["uid"]
    assert client.delete(f"{jobs}/short-lived", headers=auth(ADMIN)).status_code == 200
    assert client.get(f"{jobs}/short-lived", headers=auth(ADMIN)).status_code == 404
    [summary] = client.get(HISTORY.format(ns="team-a"), headers=auth(ALICE)).json()["items"]
    assert (summary["uid"], summary["name"], summary["phase"]) == (uid, "short-lived", "Pending")
    assert summary["deletedAt"] is not None
    assert summary["finishedAt"] is None
    record = client.get(HISTORY.format(ns="team-a") + f"/{uid}", headers=auth(ALICE)).json()
    assert record["spec"]["workload"]["pretrain"]["steps"] == 20


def test_retention_settings_prune_by_count_per_namespace(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, history_retention_count=2, history_retention_days=None)
    history = open_history(settings)
    assert history is not None
    for i in range(4):
        history.put(finished(f"job-{i}", i))
    history.put(finished("other", 0, namespace="team-b"))
    assert prune_once(history, settings) == 2
    kept = history.list("team-a", history_query())
    assert [s.name for s in kept.items] == ["job-3", "job-2"]
    assert [s.name for s in history.list("team-b", history_query()).items] == ["other"]


def test_with_history_off_the_routes_say_how_to_turn_it_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, history_enabled=False)
    with TestClient(create_app(settings, LocalBackend(settings))) as client:
        resp = client.get(HISTORY.format(ns="team-a"), headers=auth(ALICE))
    assert resp.status_code == 404
    assert "CARINA_HISTORY_URL" in resp.json()["detail"]["message"]
