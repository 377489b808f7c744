"""Creating a pipeline's jobs through the REST API: a job that would close a loop of
dependencies with the stored jobs is refused (the API server, seeing one object, cannot)."""

from __future__ import annotations

from builders import make_job
from fastapi.testclient import TestClient
from server_support import ADMIN, auth

JOBS = "/api/v1/namespaces/{ns}/trainingjobs"


def create(client: TestClient, ns: str, manifest: dict):
    return client.post(JOBS.format(ns=ns), json=manifest, headers=auth(ADMIN))


def finetune(name: str, base: str) -> dict:
    return make_job(name).with_spec(workload={"finetune": {"base": base}})


def test_a_job_that_closes_a_loop_is_refused_naming_the_field_and_the_loop(
    client: TestClient,
) -> None:
    assert create(client, "team-a", finetune("a", "job://b")).status_code == 201
    assert create(client, "team-a", make_job("b").with_spec(dependsOn=["c"])).status_code == 201
    resp = create(client, "team-a", finetune("c", "job://a"))
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail["errors"] == [
        {
            "path": "spec.workload.finetune.base",
            "rule": "the jobs' dependencies loop, so none of them can start: c -> a -> b -> c",
        }
    ]
    missing = client.get(JOBS.format(ns="team-a") + "/c", headers=auth(ADMIN))
    assert missing.status_code == 404


def test_a_chain_without_a_loop_is_stored_upstream_or_not(client: TestClient) -> None:
    # The downstream job may come first: it waits for its upstream to exist.
    assert create(client, "team-a", finetune("b", "job://a")).status_code == 201
    assert create(client, "team-a", make_job("a")).status_code == 201
    assert create(client, "team-a", finetune("c", "job://b")).status_code == 201


def test_jobs_of_another_namespace_are_never_part_of_a_loop(client: TestClient) -> None:
    assert create(client, "team-a", finetune("a", "job://b")).status_code == 201
    assert create(client, "team-b", finetune("b", "job://a")).status_code == 201
