"""GET one job and a page of jobs: the direct answer is the app's answer, byte for byte, and
every request the direct way does not take (errors, other forms) is answered by the app."""

from __future__ import annotations

import pytest
from builders import make_job
from fastapi import Request
from fastapi.testclient import TestClient
from server_support import ADMIN, ALICE, auth

from carina.platform.controlplane import fast_reads
from carina.platform.controlplane.deps import get_settings
from carina.platform.controlplane.fast_reads import parse_read
from carina.platform.controlplane.settings import Settings

JOBS = "/api/v1/namespaces/team-a/trainingjobs"


def test_a_well_formed_get_and_list_are_read_directly() -> None:
    get = parse_read("GET", JOBS + "/job-1", b"", b"Bearer tok")
    assert get is not None
    assert (get.namespace, get.name, get.token) == ("team-a", "job-1", "tok")
    page = parse_read("GET", JOBS, b"limit=7&continue=job-3", b"bearer  tok ")
    assert page is not None
    assert (page.name, page.limit, page.after, page.token) == (None, 7, "job-3", "tok")
    default = parse_read("GET", JOBS, b"", b"Bearer tok")
    assert default is not None
    assert (default.limit, default.after) == (100, "")


@pytest.mark.parametrize(
    ("method", "path", "query", "authorization"),
    [
        ("POST", JOBS, b"", b"Bearer tok"),
        ("HEAD", JOBS + "/job-1", b"", b"Bearer tok"),
        ("GET", JOBS, b"", None),
        ("GET", JOBS, b"", b"Basic dG9rCg=="),
        ("GET", JOBS, b"", b"Bearer "),
        ("GET", JOBS + "/", b"", b"Bearer tok"),
        ("GET", JOBS + "/Job", b"", b"Bearer tok"),
        ("GET", JOBS + "/job\n", b"", b"Bearer tok"),
        ("GET", JOBS + "/" + "j" * 51, b"", b"Bearer tok"),
        ("GET", JOBS + "/job-1/events", b"", b"Bearer tok"),
        ("GET", JOBS + "/job-1", b"x=1", b"Bearer tok"),
        ("GET", "/api/v1/namespaces/Team_A/trainingjobs", b"", b"Bearer tok"),
        ("GET", "/api/v1/namespaces/" + "a" * 64 + "/trainingjobs", b"", b"Bearer tok"),
        ("GET", "/api/v1/namespaces/team-a/queues", b"", b"Bearer tok"),
        ("GET", JOBS, b"limit=0", b"Bearer tok"),
        ("GET", JOBS, b"limit=1001", b"Bearer tok"),
        ("GET", JOBS, b"limit=%2B5", b"Bearer tok"),
        ("GET", JOBS, b"limit=", b"Bearer tok"),
        ("GET", JOBS, b"limit=5&limit=6", b"Bearer tok"),
        ("GET", JOBS, b"continue=a%20b", b"Bearer tok"),
        ("GET", JOBS, b"continue=" + b"a" * 4097, b"Bearer tok"),
        ("GET", JOBS, b"watch=true", b"Bearer tok"),
    ],
)
def test_anything_else_is_left_to_the_app(
    method: str, path: str, query: bytes, authorization: bytes | None
) -> None:
    assert parse_read(method, path, query, authorization) is None


REQUESTS = [
    (JOBS + "/job-1", ALICE),
    (JOBS + "/job-1", ADMIN),
    (JOBS + "/missing", ALICE),
    (JOBS + "/job-1", "not-a-token"),
    (JOBS + "/job-1", None),
    ("/api/v1/namespaces/team-b/trainingjobs/job-1", ALICE),
    ("/api/v1/namespaces/team-b/trainingjobs", ALICE),
    (JOBS, ALICE),
    (JOBS + "?limit=2", ALICE),
    (JOBS + "?limit=2&continue=job-2", ALICE),
    (JOBS + "?limit=0", ALICE),
    (JOBS + "?limit=x", ALICE),
    (JOBS + "?continue=a%20b", ALICE),
    (JOBS + "/Bad_Name", ALICE),
]


def test_the_direct_answers_are_the_apps_own(client: TestClient) -> None:
    for i in range(5):
        assert client.post(JOBS, json=make_job(f"job-{i}"), headers=auth(ALICE)).status_code == 201

    def answers() -> list[tuple[int, list[tuple[str, str]], bytes]]:
        out = []
        for url, token in REQUESTS:
            resp = client.get(url, headers=auth(token) if token else {})
            headers = [(k, v) for k, v in resp.headers.multi_items() if k != "date"]
            out.append((resp.status_code, headers, resp.content))
        return out

    direct = answers()

    async def same_settings(request: Request) -> Settings:
        settings: Settings = request.app.state.settings
        return settings

    client.app.dependency_overrides[get_settings] = same_settings  # the app answers all
    assert answers() == direct
    assert [code for code, _, _ in direct] == [
        200, 200, 404, 401, 401, 403, 403, 200, 200, 200, 422, 422, 422, 422
    ]  # fmt: skip


def test_direct_answers_count_in_the_request_metrics_by_route(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.post(JOBS, json=make_job("job-1"), headers=auth(ALICE)).status_code == 201
    answered = []
    answer = fast_reads.FastReads._answer

    async def spy(self: fast_reads.FastReads, read: fast_reads.Read) -> str | None:
        body = await answer(self, read)
        answered.append(body is not None)
        return body

    monkeypatch.setattr(fast_reads.FastReads, "_answer", spy)
    assert client.get(JOBS + "/job-1", headers=auth(ALICE)).status_code == 200
    assert client.get(JOBS + "?limit=5", headers=auth(ALICE)).status_code == 200
    assert answered == [True, True]
    text = client.get("/metrics", headers=auth(ALICE)).text
    for route in (fast_reads.JOB_ROUTE, fast_reads.JOBS_ROUTE):
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("carina_api_requests_total{")
            and f'route="{route}"' in line
            and 'method="GET"' in line
            and 'code="200"' in line
        )
        assert float(line.rsplit(" ", 1)[1]) >= 1
