"""GET one job and a page of jobs on a real `carina up`: the direct answer (fast_reads.py) is
the one the app gives, headers and bytes, paging walks every job, and errors keep their shape.

A query parameter the routes ignore (`x=1`) sends the same request the app's way, so each
read is compared on the one server with itself answered both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, running

JOBS = "/api/v1/namespaces/team-a/trainingjobs"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(tmp_path / "state", STANDIN_WORKER, env={"CARINA_RUN_WORKERS": "false"}) as up:
        yield up


def _answer(http: httpx.Client, url: str) -> tuple[int, list[tuple[str, str]], bytes]:
    resp = http.get(url)
    return (
        resp.status_code,
        [(k, v) for k, v in resp.headers.multi_items() if k != "date"],
        (resp.content),
    )


def test_direct_reads_answer_as_the_app_does(up: CarinaUp) -> None:
    token = (up.state_dir / "token").read_text().strip()
    with httpx.Client(
        base_url=up.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for i in range(3):
            assert http.post(JOBS, json=make_job(f"job-{i}")).status_code == 201
        for url in (JOBS + "/job-1", JOBS + "?limit=2", JOBS + "?limit=2&continue=job-1"):
            other = url + ("&" if "?" in url else "?") + "x=1"  # the app's way
            for _ in range(20):  # the substrate may write a status in between: until still
                direct, by_app, again = _answer(http, url), _answer(http, other), _answer(http, url)
                if direct == again:
                    break
            assert direct == again
            assert by_app == direct
            assert direct[0] == 200
            assert ("content-type", "application/json") in direct[1]

        names, after = [], ""
        while True:
            page = http.get(JOBS, params={"limit": 2, "continue": after} if after else {"limit": 2})
            assert page.status_code == 200
            names += [job["metadata"]["name"] for job in page.json()["items"]]
            after = page.json()["metadata"]["continue"]
            if after is None:
                break
        assert names == ["job-0", "job-1", "job-2"]

        missing = http.get(JOBS + "/nope")
        assert missing.status_code == 404
        assert missing.json()["detail"]["reason"] == "NotFound"
        wrong = http.get(JOBS + "/job-1", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert http.get(JOBS, headers={"Authorization": ""}).status_code == 401

        metrics = http.get("/metrics").text
        assert 'route="/api/v1/namespaces/{namespace}/trainingjobs/{name}"' in metrics
        assert "job-1" not in metrics
