"""Watching jobs over server-sent events, on a real `carina up`: a watcher is told of each
change as it happens, without asking again, and a caller without a valid token gets none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from builders import make_job
from embedded_platform import STANDIN_WORKER, CarinaUp, running

NS = "default"
WATCH = "/api/v1/watch/namespaces/{ns}/trainingjobs"
DONE = ("Succeeded", "Failed")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(
        tmp_path / "state",
        STANDIN_WORKER,
        env={
            "STANDIN_STEP_SECONDS": "0.05",
            "CARINA_CAPACITY_CPUS": "4",
            "CARINA_WATCH_HEARTBEAT_SECONDS": "1",
        },
    ) as up:
        yield up


def token(up: CarinaUp) -> str:
    return (up.state_dir / "token").read_text().strip()


def events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, job) of each server-sent event; heartbeats (comment lines) are skipped."""
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, json.loads(line.removeprefix("data: "))


def phase(job: dict[str, Any]) -> str | None:
    return (job.get("status") or {}).get("phase")


def short_job(name: str) -> dict[str, Any]:
    return make_job(name).with_replicas(1).with_pretrain(steps=20)


def test_a_namespace_watcher_sees_a_job_added_run_to_succeeded_and_deleted(
    platform: CarinaUp,
) -> None:
    client = platform.client()
    seen: list[tuple[str, str, str | None]] = []
    headers = {"Authorization": f"Bearer {token(platform)}"}
    # The read timeout fails the test if the stream goes silent: heartbeats come every second.
    with (
        httpx.Client(base_url=platform.url, headers=headers, timeout=30) as http,
        http.stream("GET", WATCH.format(ns=NS)) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        client.create(NS, short_job("watched"))
        for kind, job in events(stream):
            seen.append((kind, job["metadata"]["name"], phase(job)))
            if phase(job) in DONE and not any(k == "deleting" for k, _, _ in seen):
                client.delete(NS, "watched")
                seen.append(("deleting", "watched", None))
            if kind == "DELETED":
                break
    seen = [s for s in seen if s[0] != "deleting"]
    assert seen[0][:2] == ("ADDED", "watched")
    kinds = [k for k, _, _ in seen]
    assert set(kinds[1:-1]) == {"MODIFIED"}
    assert seen[-1][:2] == ("DELETED", "watched")
    phases = [p for _, _, p in seen]
    assert "Running" in phases
    assert "Succeeded" in phases


def test_watching_one_job_streams_it_as_get_serves_it_then_its_changes(
    platform: CarinaUp,
) -> None:
    client = platform.client()
    client.create(NS, short_job("one"))
    client.create(NS, short_job("other").with_spec(suspend=True))
    names = set()
    last: dict[str, Any] = {}
    for kind, job in client.watch(NS, "one"):
        names.add(job["metadata"]["name"])
        if not last:
            assert kind == "ADDED"
        last = job
        if phase(job) in DONE:
            break
    assert names == {"one"}
    assert phase(last) == "Succeeded"
    assert last == client.get(NS, "one")


def test_a_wrong_token_gets_401_and_no_stream(platform: CarinaUp) -> None:
    platform.client().create(NS, short_job("private"))
    for path in (WATCH.format(ns=NS), WATCH.format(ns=NS) + "/private"):
        resp = httpx.get(platform.url + path, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert resp.status_code == 401
        assert resp.headers["content-type"] == "application/json"
        assert resp.json()["detail"]["reason"] == "Unauthorized"


def test_carina_get_watch_prints_the_job_at_each_change_until_it_is_deleted(
    platform: CarinaUp,
) -> None:
    client = platform.client()
    client.create(NS, short_job("followed").with_spec(suspend=True))
    env = {**os.environ, "CARINA_STATE_DIR": str(platform.state_dir)}
    command = [sys.executable, "-m", "carina.platform", "get", "followed", "--watch"]
    cli = subprocess.Popen(
        [*command, "--server", platform.url, "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert cli.stdout is not None
        lines = []  # the job as it is now (ADDED): indented JSON, up to its closing brace
        while not lines or lines[-1] not in ("}\n", ""):
            lines.append(cli.stdout.readline())
        assert json.loads("".join(lines))["metadata"]["name"] == "followed"
        client.delete(NS, "followed")
        rest, _ = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 0, rest
    assert "trainingjob default/followed deleted" in rest
