"""The kubernetes backend against the real test control plane: TokenReview for who,
SubjectAccessReview for what, with two service accounts whose RBAC differs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import make_job
from fastapi.testclient import TestClient

from carina.platform.controlplane.main import create_app
from carina.platform.controlplane.settings import Settings
from carina.testcluster import TestCluster

pytestmark = pytest.mark.k8s

JOBS = "/api/v1/namespaces/{ns}/trainingjobs"
TRAINER_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: trainer}
rules:
- apiGroups: [carina.dev]
  resources: [trainingjobs]
  verbs: [get, list, watch, create, delete, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [list]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: viewer}
rules:
- apiGroups: [carina.dev]
  resources: [trainingjobs]
  verbs: [get, list]
"""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(k8s_cluster: TestCluster, namespace: str) -> dict[str, str]:
    """trainer: may run jobs here; viewer: may only read them; nobody: no rights at all."""
    k8s_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=TRAINER_ROLE)
    out = {}
    for account, role in (("trainer", "trainer"), ("viewer", "viewer"), ("nobody", None)):
        k8s_cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
        if role:
            k8s_cluster.kubectl(
                "create",
                "rolebinding",
                account,
                "-n",
                namespace,
                f"--role={role}",
                f"--serviceaccount={namespace}:{account}",
            )
        out[account] = k8s_cluster.kubectl(
            "create", "token", account, "-n", namespace
        ).stdout.strip()
    return out


@pytest.fixture
def client(k8s_cluster: TestCluster) -> Iterator[TestClient]:
    settings = Settings(backend="kubernetes", kubeconfig=k8s_cluster.kubeconfig)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_a_trainer_creates_gets_lists_suspends_and_deletes(
    client: TestClient, tokens: dict[str, str], namespace: str
) -> None:
    url = JOBS.format(ns=namespace)
    created = client.post(url, json=make_job("via-rest"), headers=auth(tokens["trainer"]))
    assert created.status_code == 201, created.text
    assert created.json()["metadata"]["uid"]
    got = client.get(f"{url}/via-rest", headers=auth(tokens["trainer"]))
    assert got.status_code == 200
    listed = client.get(url, headers=auth(tokens["trainer"]))
    assert [j["metadata"]["name"] for j in listed.json()["items"]] == ["via-rest"]
    suspended = client.post(f"{url}/via-rest/suspend", headers=auth(tokens["trainer"]))
    assert suspended.status_code == 200
    assert suspended.json()["spec"]["suspend"] is True
    assert client.get(f"{url}/via-rest/events", headers=auth(tokens["trainer"])).status_code == 200
    assert client.delete(f"{url}/via-rest", headers=auth(tokens["trainer"])).status_code == 200


def test_rbac_decides_what_each_account_may_do(
    client: TestClient, tokens: dict[str, str], namespace: str
) -> None:
    url = JOBS.format(ns=namespace)
    assert (
        client.post(url, json=make_job("mine"), headers=auth(tokens["trainer"])).status_code == 201
    )
    assert client.get(f"{url}/mine", headers=auth(tokens["viewer"])).status_code == 200
    assert (
        client.post(url, json=make_job("theirs"), headers=auth(tokens["viewer"])).status_code == 403
    )
    assert client.delete(f"{url}/mine", headers=auth(tokens["viewer"])).status_code == 403
    assert client.get(f"{url}/mine", headers=auth(tokens["nobody"])).status_code == 403
    assert (
        client.get(JOBS.format(ns="kube-system"), headers=auth(tokens["trainer"])).status_code
        == 403
    )


def test_unknown_tokens_are_401(client: TestClient, namespace: str) -> None:
    resp = client.get(JOBS.format(ns=namespace), headers=auth("not-a-kubernetes-token"))
    assert resp.status_code == 401


def test_a_taken_name_is_409_and_a_missing_job_404(
    client: TestClient, tokens: dict[str, str], namespace: str
) -> None:
    url = JOBS.format(ns=namespace)
    assert (
        client.post(url, json=make_job("dup"), headers=auth(tokens["trainer"])).status_code == 201
    )
    again = client.post(url, json=make_job("dup"), headers=auth(tokens["trainer"]))
    assert again.status_code == 409
    assert client.get(f"{url}/absent", headers=auth(tokens["trainer"])).status_code == 404


def test_logs_of_a_generation_without_a_kept_pod_are_404_with_the_reason(
    client: TestClient, tokens: dict[str, str], namespace: str
) -> None:
    url = JOBS.format(ns=namespace)
    headers = auth(tokens["trainer"])
    assert client.post(url, json=make_job("quiet"), headers=headers).status_code == 201
    log = f"{url}/quiet/workers/0/log"
    never = client.get(log, params={"restart": 3}, headers=headers)
    assert never.status_code == 404
    assert "there is no restart 3" in never.json()["detail"]["message"]
    not_kept = client.get(log, params={"restart": 0}, headers=headers)
    assert not_kept.status_code == 404
    assert "is not kept" in not_kept.json()["detail"]["message"]
    current = client.get(log, headers=headers)
    assert current.status_code == 404
    assert "has no pod (yet)" in current.json()["detail"]["message"]


def test_readyz_reports_the_api_server(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def server(k8s_cluster: TestCluster, tmp_path: Path) -> Iterator[str]:
    """The control plane in a process of its own over the cluster (a stream needs a socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "CARINA_BACKEND": "kubernetes",
        "CARINA_KUBECONFIG": str(k8s_cluster.kubeconfig),
        "CARINA_WATCH_HEARTBEAT_SECONDS": "1",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "uvicorn", "--factory", "carina.platform.controlplane.main:create_app"),
            *("--port", str(port), "--log-level", "warning"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_a_watcher_sees_the_phase_the_api_server_stores_and_a_wrong_token_no_stream(
    server: str, k8s_cluster: TestCluster, tokens: dict[str, str], namespace: str
) -> None:
    watch = f"{server}/api/v1/watch/namespaces/{namespace}/trainingjobs"
    for bad, code in (("not-a-kubernetes-token", 401), (tokens["viewer"], 403)):
        refused = httpx.get(f"{watch}/watched", headers=auth(bad), timeout=30)
        assert refused.status_code == code
        assert refused.headers["content-type"] == "application/json"
    created = httpx.post(
        f"{server}{JOBS.format(ns=namespace)}",
        json=make_job("watched"),
        headers=auth(tokens["trainer"]),
        timeout=30,
    )
    assert created.status_code == 201, created.text
    seen: list[tuple[str, str | None]] = []
    with (
        httpx.Client(headers=auth(tokens["trainer"]), timeout=60) as http,
        http.stream("GET", f"{watch}/watched") as stream,
    ):
        assert stream.status_code == 200
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                job = json.loads(line.removeprefix("data: "))
                phase = (job.get("status") or {}).get("phase")
                seen.append((kind, phase))
                if kind == "ADDED":  # what the operator would write, written here instead
                    k8s_cluster.kubectl(
                        *("patch", "trainingjob", "watched", "-n", namespace),
                        *("--subresource=status", "--type=merge"),
                        "-p",
                        '{"status": {"phase": "Running"}}',
                    )
                if phase == "Running":
                    break
    assert seen[0][0] == "ADDED"
    assert seen[-1] == ("MODIFIED", "Running")
