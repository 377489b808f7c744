"""Job history on the real test control plane (kube-apiserver, kwok) with the operator.

The control plane runs as a process of its own with the kubernetes backend and a history
store (SQLite, then a real PostgreSQL server). It puts its finalizer on each job, so a job
its TTL deletes waits until its record is written: afterwards `carina history` still shows
the job's final status. kwok's pods keep no logs, so a record's log tails are what the API
server gives for them (nothing), and log tails are covered on the embedded platform.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from builders import make_job
from operator_process import OperatorProcess
from typer.testing import CliRunner

from carina.platform.cli.main import app
from carina.platform.controlplane.history_recorder import FINALIZER
from carina.testcluster import SIMULATE_EXIT_CODE_ANNOTATION, TestCluster
from carina.testcluster.processes import free_port, wait_until

pytestmark = pytest.mark.k8s

TIMEOUT = 60
ROLES = """
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
"""


def cpu_job(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    job = dict(
        make_job(name)
        .with_replicas(2)
        .with_labels({"team": "nlp"})
        .with_spec(
            resources={"cpu": "10m", "memory": "16Mi"},
            failurePolicy={"backoffSeconds": 0},
            **spec,
        )
    )
    job["metadata"]["namespace"] = namespace
    return job


@pytest.fixture
def tokens(k8s_cluster: TestCluster, namespace: str) -> dict[str, str]:
    """trainer: may run and read jobs here; nobody: no rights at all."""
    k8s_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=ROLES)
    out = {}
    for account in ("trainer", "nobody"):
        k8s_cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
        if account == "trainer":
            k8s_cluster.kubectl(
                "create",
                *("rolebinding", account, "-n", namespace, "--role=trainer"),
                f"--serviceaccount={namespace}:{account}",
            )
        out[account] = k8s_cluster.kubectl(
            "create", "token", account, "-n", namespace
        ).stdout.strip()
    return out


class ControlPlane:
    """`uvicorn --factory ...create_app` with the kubernetes backend and a history URL."""

    def __init__(self, cluster: TestCluster, history_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CARINA_BACKEND": "kubernetes",
            "CARINA_KUBECONFIG": str(cluster.kubeconfig),
            "CARINA_HISTORY_URL": history_url,
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControlPlane:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "uvicorn", "--factory", "carina.platform.controlplane.main:create_app"),
                    *("--port", str(self.port), "--log-level", "warning"),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
            60,
            "the control plane",
            alive=self._alive,
        )
        return self

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"control plane exited: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture(params=["sqlite", "postgres"])
def control_plane(
    request: pytest.FixtureRequest, k8s_cluster: TestCluster, tmp_path: Path
) -> Iterator[ControlPlane]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
    else:
        url = str(request.getfixturevalue("postgres"))
    server = ControlPlane(k8s_cluster, url, tmp_path / "control-plane.log").start()
    try:
        yield server
    finally:
        server.stop()
        print(f"--- control plane log\n{server.log.read_text()[-3000:]}")


def get(url: str, token: str, **params: Any) -> httpx.Response:
    return httpx.get(url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def finalizers(cluster: TestCluster, namespace: str, name: str) -> list[str]:
    meta = cluster.get_json("trainingjob", name, "-n", namespace)["metadata"]
    return list(meta.get("finalizers") or [])


def no_jobs(cluster: TestCluster, namespace: str) -> bool:
    out = cluster.kubectl("get", "trainingjobs", "-n", namespace, "-o", "name").stdout
    return out.strip() == ""


def test_a_job_deleted_by_its_ttl_is_still_in_carina_history(
    k8s_cluster: TestCluster,
    namespace: str,
    operator: OperatorProcess,
    control_plane: ControlPlane,
    tokens: dict[str, str],
) -> None:
    k8s_cluster.apply([cpu_job("llm", namespace, ttlSecondsAfterFinished=2)], server_side=False)
    wait_until(
        lambda: FINALIZER in finalizers(k8s_cluster, namespace, "llm"),
        TIMEOUT,
        "the history finalizer on the job",
    )
    uid = k8s_cluster.get_json("trainingjob", "llm", "-n", namespace)["metadata"]["uid"]

    def phase() -> str:
        job = k8s_cluster.get_json("trainingjob", "llm", "-n", namespace)
        return str((job.get("status") or {}).get("phase"))

    wait_until(lambda: phase() == "Running", TIMEOUT, "llm Running", alive=operator._alive)
    pod_logs = {}
    for i in range(2):
        pod = f"llm-worker-{i}-r0"
        kubectl_log = k8s_cluster.kubectl("logs", pod, "-n", namespace, check=False)
        pod_logs[str(i)] = kubectl_log.stdout if kubectl_log.returncode == 0 else ""
        k8s_cluster.kubectl(
            "annotate", "pod", pod, "-n", namespace, f"{SIMULATE_EXIT_CODE_ANNOTATION}=0"
        )
    wait_until(lambda: no_jobs(k8s_cluster, namespace), 2 * TIMEOUT, "the TTL's delete")

    history = f"{control_plane.url}/api/v1/namespaces/{namespace}/history"
    listing = get(history, tokens["trainer"])
    assert listing.status_code == 200, listing.text
    [summary] = listing.json()["items"]
    assert (summary["uid"], summary["name"], summary["phase"]) == (uid, "llm", "Succeeded")
    assert summary["labels"] == {"team": "nlp"}
    assert summary["finishedAt"]
    assert summary["deletedAt"]
    assert summary["reason"]

    record = get(f"{history}/{uid}", tokens["trainer"]).json()
    assert record["status"]["phase"] == "Succeeded"
    assert record["status"]["completionTime"]
    assert any(c["type"] == "Succeeded" and c["status"] == "True" for c in record["conditions"])
    assert record["spec"]["ttlSecondsAfterFinished"] == 2
    # What the cluster gives for each pod's log (kwok keeps none).
    assert record["logs"] == {k: v for k, v in pod_logs.items() if v}

    env = {
        "CARINA_SERVER": control_plane.url,
        "CARINA_TOKEN": tokens["trainer"],
        "CARINA_NAMESPACE": namespace,
        "COLUMNS": "200",
    }
    table = CliRunner().invoke(app, ["history"], env=env)
    assert table.exit_code == 0, table.output
    assert re.search(r"llm\s+Succeeded", table.output)
    shown = CliRunner().invoke(app, ["history", "llm"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "Phase:      Succeeded" in shown.output
    assert "Conditions" in shown.output

    # A job deleted while it runs is recorded as it was.
    k8s_cluster.apply([cpu_job("cut", namespace)], server_side=False)
    wait_until(
        lambda: FINALIZER in finalizers(k8s_cluster, namespace, "cut"),
        TIMEOUT,
        "the history finalizer on cut",
    )
    wait_until(
        lambda: (
            (k8s_cluster.get_json("trainingjob", "cut", "-n", namespace).get("status") or {}).get(
                "phase"
            )
            == "Running"
        ),
        TIMEOUT,
        "cut Running",
        alive=operator._alive,
    )
    k8s_cluster.kubectl("delete", "trainingjob", "cut", "-n", namespace, "--wait=false")
    wait_until(lambda: no_jobs(k8s_cluster, namespace), TIMEOUT, "cut to go")
    [cut] = get(history, tokens["trainer"], name="cut").json()["items"]
    assert cut["phase"] == "Running"
    assert cut["deletedAt"]
    assert cut["finishedAt"] is None
    running = get(history, tokens["trainer"], phase="Running").json()["items"]
    assert [r["name"] for r in running] == ["cut"]

    # Who may not use the namespace sees nothing of it.
    assert get(history, tokens["nobody"]).status_code == 403
    assert get(f"{history}/{uid}", tokens["nobody"]).status_code == 403
    assert get(history, "not-a-token").status_code == 401
    other = f"{control_plane.url}/api/v1/namespaces/kube-system/history"
    assert get(other, tokens["trainer"]).status_code == 403


def test_a_job_deleted_while_the_control_plane_is_down_waits_until_the_finalizer_is_cleared(
    k8s_cluster: TestCluster,
    namespace: str,
    control_plane: ControlPlane,
) -> None:
    k8s_cluster.apply([cpu_job("held", namespace)], server_side=False)
    wait_until(
        lambda: FINALIZER in finalizers(k8s_cluster, namespace, "held"),
        TIMEOUT,
        "the history finalizer on the job",
    )
    control_plane.stop()
    k8s_cluster.kubectl("delete", "trainingjob", "held", "-n", namespace, "--wait=false")
    job = k8s_cluster.get_json("trainingjob", "held", "-n", namespace)
    assert job["metadata"].get("deletionTimestamp")  # held by the finalizer
    # The documented way out: remove the finalizer by hand.
    index = job["metadata"]["finalizers"].index(FINALIZER)
    patch = json.dumps([{"op": "remove", "path": f"/metadata/finalizers/{index}"}])
    k8s_cluster.kubectl("patch", "trainingjob", "held", "-n", namespace, "--type=json", "-p", patch)
    wait_until(lambda: no_jobs(k8s_cluster, namespace), TIMEOUT, "the job to go")
