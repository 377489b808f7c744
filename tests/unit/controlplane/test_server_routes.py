"""The REST API as a client sees it: status code first, then the body."""

from __future__ import annotations

import json

import pytest
from builders import BAD_MANIFESTS, make_job
from fastapi.testclient import TestClient
from server_support import ADMIN, ALICE, BOB, auth

from carina.platform.controlplane.backend_errors import Unavailable
from carina.platform.controlplane.deps import get_backend

JOBS = "/api/v1/namespaces/{ns}/trainingjobs"


def create(client: TestClient, ns: str, manifest: dict, token: str = ALICE):
    return client.post(JOBS.format(ns=ns), json=manifest, headers=auth(token))


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", JOBS.format(ns="team-a")),
        ("POST", JOBS.format(ns="team-a")),
        ("GET", JOBS.format(ns="team-a") + "/demo"),
        ("DELETE", JOBS.format(ns="team-a") + "/demo"),
        ("POST", JOBS.format(ns="team-a") + "/demo/suspend"),
        ("GET", JOBS.format(ns="team-a") + "/demo/metrics"),
        ("GET", JOBS.format(ns="team-a") + "/demo/events"),
        ("GET", JOBS.format(ns="team-a") + "/demo/workers/0/log"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/watch/namespaces/team-a/trainingjobs"),
        ("GET", "/api/v1/watch/namespaces/team-a/trainingjobs/demo"),
    ],
)
def test_every_other_route_needs_a_valid_token(client: TestClient, method: str, path: str) -> None:
    missing = client.request(method, path)
    wrong = client.request(method, path, headers=auth("not-a-token"))
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"


def test_watching_another_tenants_jobs_is_forbidden_and_a_missing_job_is_not_found(
    client: TestClient,
) -> None:
    watch = "/api/v1/watch/namespaces/{ns}/trainingjobs"
    assert client.get(watch.format(ns="team-b"), headers=auth(ALICE)).status_code == 403
    assert client.get(watch.format(ns="team-b") + "/x", headers=auth(ALICE)).status_code == 403
    missing = client.get(watch.format(ns="team-a") + "/absent", headers=auth(ALICE))
    assert missing.status_code == 404
    assert missing.json()["detail"]["reason"] == "NotFound"


def test_create_then_get_returns_the_job_with_platform_metadata(client: TestClient) -> None:
    resp = create(client, "team-a", make_job("demo"))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["uid"]
    assert body["metadata"]["generation"] == 1
    got = client.get(JOBS.format(ns="team-a") + "/demo", headers=auth(ALICE))
    assert got.status_code == 200
    assert got.json()["spec"]["workload"]["pretrain"]["steps"] == 20


def test_create_ignores_a_status_in_the_body(client: TestClient) -> None:
    manifest = make_job("demo")
    manifest["status"] = {"phase": "Succeeded"}
    assert create(client, "team-a", manifest).status_code == 201
    got = client.get(JOBS.format(ns="team-a") + "/demo", headers=auth(ALICE)).json()
    assert got["status"].get("phase") != "Succeeded"


def test_creating_a_taken_name_is_a_conflict(client: TestClient) -> None:
    assert create(client, "team-a", make_job("demo")).status_code == 201
    again = create(client, "team-a", make_job("demo"))
    assert again.status_code == 409
    assert again.json()["detail"]["reason"] == "AlreadyExists"


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_is_422_with_the_field_path(client: TestClient, case: str) -> None:
    manifest, path = BAD_MANIFESTS[case]
    resp = create(client, "team-a", manifest)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert detail["reason"] == "Invalid"
    assert any(e["path"].startswith(path) for e in detail["errors"]), detail


def test_a_namespace_in_the_body_must_match_the_url(client: TestClient) -> None:
    manifest = make_job("demo")
    manifest["metadata"]["namespace"] = "team-b"
    resp = create(client, "team-a", manifest)
    assert resp.status_code == 422
    assert resp.json()["detail"]["errors"][0]["path"] == "metadata.namespace"


def test_malformed_json_is_422_not_500(client: TestClient) -> None:
    resp = client.post(
        JOBS.format(ns="team-a"),
        content=b"{not json",
        headers={**auth(ALICE), "content-type": "application/json"},
    )
    assert resp.status_code == 422


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    manifest = make_job("demo")
    manifest["metadata"]["annotations"] = {"padding": "x" * (2 << 20)}
    resp = create(client, "team-a", manifest)
    assert resp.status_code == 413
    assert resp.json()["detail"]["reason"] == "RequestTooLarge"


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    resp = client.post(
        JOBS.format(ns="team-a"),
        content=chunks(),
        headers={**auth(ALICE), "content-type": "application/json"},
    )
    assert resp.status_code == 413


def test_another_tenants_namespace_is_403_whether_or_not_the_job_exists(
    client: TestClient,
) -> None:
    assert create(client, "team-a", make_job("demo")).status_code == 201
    existing = client.get(JOBS.format(ns="team-a") + "/demo", headers=auth(BOB))
    absent = client.get(JOBS.format(ns="team-a") + "/nope", headers=auth(BOB))
    assert existing.status_code == absent.status_code == 403
    assert existing.json() == absent.json() | {"detail": existing.json()["detail"]}
    assert "demo" not in existing.text
    assert create(client, "team-a", make_job("other"), token=BOB).status_code == 403


def test_list_shows_only_the_namespace_asked_for_a_page_at_a_time(client: TestClient) -> None:
    for i in range(5):
        assert create(client, "team-a", make_job(f"job-{i}")).status_code == 201
    assert create(client, "team-b", make_job("theirs"), token=BOB).status_code == 201
    first = client.get(JOBS.format(ns="team-a"), params={"limit": 3}, headers=auth(ALICE))
    assert first.status_code == 200
    page = first.json()
    assert [j["metadata"]["name"] for j in page["items"]] == ["job-0", "job-1", "job-2"]
    rest = client.get(
        JOBS.format(ns="team-a"),
        params={"limit": 3, "continue": page["metadata"]["continue"]},
        headers=auth(ALICE),
    ).json()
    assert [j["metadata"]["name"] for j in rest["items"]] == ["job-3", "job-4"]
    assert rest["metadata"]["continue"] is None


def test_get_of_a_missing_job_is_404(client: TestClient) -> None:
    resp = client.get(JOBS.format(ns="team-a") + "/nope", headers=auth(ALICE))
    assert resp.status_code == 404
    assert resp.json()["detail"]["reason"] == "NotFound"


def test_suspend_and_resume_flip_spec_suspend_and_bump_the_generation(client: TestClient) -> None:
    create(client, "team-a", make_job("demo"))
    url = JOBS.format(ns="team-a") + "/demo"
    suspended = client.post(url + "/suspend", headers=auth(ALICE))
    assert suspended.status_code == 200
    assert suspended.json()["spec"]["suspend"] is True
    assert suspended.json()["metadata"]["generation"] == 2
    resumed = client.post(url + "/resume", headers=auth(ALICE)).json()
    assert resumed["spec"]["suspend"] is False
    assert resumed["metadata"]["generation"] == 3


def test_delete_removes_the_job(client: TestClient) -> None:
    create(client, "team-a", make_job("demo"))
    url = JOBS.format(ns="team-a") + "/demo"
    assert client.delete(url, headers=auth(ALICE)).status_code == 200
    assert client.get(url, headers=auth(ALICE)).status_code == 404
    assert client.delete(url, headers=auth(ALICE)).status_code == 404


def test_metrics_events_and_logs_of_a_job_that_has_not_run(client: TestClient) -> None:
    create(client, "team-a", make_job("demo"))
    url = JOBS.format(ns="team-a") + "/demo"
    series = client.get(url + "/metrics", headers=auth(ALICE))
    assert series.status_code == 200
    assert series.json() == {"source": "local", "step": [], "loss": [], "tokensPerSecond": []}
    events = client.get(url + "/events", headers=auth(ALICE)).json()["items"]
    assert all(e["reason"] != "Created" for e in events)  # no worker was started
    assert client.get(url + "/workers/0/log", headers=auth(ALICE)).status_code == 404


def test_bad_path_parameters_are_422(client: TestClient) -> None:
    assert client.get(JOBS.format(ns="Team_A"), headers=auth(ADMIN)).status_code == 422
    assert (
        client.get(
            JOBS.format(ns="team-a") + "/x" * 1 + "/workers/-1/log", headers=auth(ADMIN)
        ).status_code
        == 422
    )


def test_a_backend_that_cannot_answer_is_503(client: TestClient) -> None:
    class Down:
        async def authenticate(self, token: str):
            raise Unavailable("the API server did not answer")

    client.app.dependency_overrides[get_backend] = lambda: Down()
    resp = client.get(JOBS.format(ns="team-a"), headers=auth(ALICE))
    assert resp.status_code == 503
    assert resp.json()["detail"]["reason"] == "Unavailable"


def test_server_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get(JOBS.format(ns="team-a") + "/some-job", headers=auth(ALICE))
    text = client.get("/metrics", headers=auth(ALICE)).text
    assert 'route="/api/v1/namespaces/{namespace}/trainingjobs/{name}"' in text
    assert "some-job" not in text


def test_openapi_document_describes_the_job_body_and_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/api/v1/namespaces/{namespace}/trainingjobs"]["post"]
    assert "TrainingJob" in json.dumps(post["requestBody"])
    assert "ErrorResponse" in json.dumps(post["responses"]["422"])
