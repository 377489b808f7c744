"""The chart installed into the real test control plane: objects, RBAC as the API server sees it.

`make helm-check` (scripts/helm-check.sh) lints, renders, dry-runs and installs each profile;
these tests install once and ask the API server what each component's account may do, so
"least privilege" is checked by the authorizer itself rather than by reading YAML.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from builders import make_job
from helm_chart import CHART, ROOT, env_of, helm

from carina.testcluster import TestCluster
from carina.testcluster.processes import free_port, wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.slow]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str  # where Carina runs, and where the test's TrainingJobs go

    def account(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-{component}"

    @property
    def worker(self) -> str:
        return f"system:serviceaccount:{self.namespace}:carina-worker"


@pytest.fixture(scope="module")
def release(k8s_cluster: TestCluster) -> Iterator[Release]:
    """The chart installed (and --wait'ed for: kwok runs the pods) in a namespace of its own."""
    suffix = uuid.uuid4().hex[:6]
    rel = Release(name=f"carina-{suffix}", namespace=f"helm-{suffix}")
    helm(
        "install",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "--create-namespace",
        # cluster-scoped names must not meet another release's
        "--set",
        f"operator.peering.name={rel.name}",
        "--wait",
        "--timeout",
        "3m",
    )
    try:
        yield rel
    finally:
        helm("uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        k8s_cluster.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


def _can(cluster: TestCluster, who: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", f"--as={who}", *args, check=False)
    return result.stdout.strip() == "yes"


def test_every_object_of_the_release_is_in_the_cluster(
    k8s_cluster: TestCluster, release: Release
) -> None:
    manifest = helm("get", "manifest", release.name, "-n", release.namespace).stdout
    found = k8s_cluster.kubectl("get", "-f", "-", "-o", "name", input=manifest).stdout.split()
    assert len(found) == manifest.count("\nkind: ") + manifest.startswith("kind: ")
    assert f"clusterkopfpeering.kopf.dev/{release.name}" in found


def test_both_operator_replicas_and_the_control_plane_run(
    k8s_cluster: TestCluster, release: Release
) -> None:
    for deployment, replicas in (("operator", 2), ("control-plane", 1)):
        status = k8s_cluster.get_json(
            "deployment", f"{release.name}-{deployment}", "-n", release.namespace
        )["status"]
        assert status.get("readyReplicas") == replicas, deployment


def test_the_operator_may_run_jobs_in_any_namespace_and_nothing_else(
    k8s_cluster: TestCluster, release: Release
) -> None:
    operator = release.account("operator")
    for allowed in (
        ("watch", "trainingjobs.carina.dev", "--all-namespaces"),
        ("patch", "trainingjobs.carina.dev", "--subresource=status", "-n", "team-a"),
        ("create", "pods", "-n", "team-a"),
        ("delete", "pods", "-n", "team-b"),
        ("create", "services", "-n", "team-a"),
        ("create", "events", "-n", "team-a"),
        ("patch", f"clusterkopfpeerings.kopf.dev/{release.name}"),
    ):
        assert _can(k8s_cluster, operator, *allowed), allowed
    for denied in (
        ("get", "secrets", "-n", release.namespace),
        ("create", "configmaps", "-n", "team-a"),  # the spec travels in the pods
        ("create", "deployments.apps", "-n", "team-a"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "tokenreviews.authentication.k8s.io"),
        ("update", "nodes"),
    ):
        assert not _can(k8s_cluster, operator, *denied), denied


def test_the_control_plane_may_review_callers_and_manage_jobs_only(
    k8s_cluster: TestCluster, release: Release
) -> None:
    control_plane = release.account("control-plane")
    for allowed in (
        ("create", "tokenreviews.authentication.k8s.io"),
        ("create", "subjectaccessreviews.authorization.k8s.io"),
        ("create", "trainingjobs.carina.dev", "-n", "team-a"),
        ("delete", "trainingjobs.carina.dev", "-n", "team-a"),
        ("list", "events", "-n", "team-a"),
        ("get", "pods", "--subresource=log", "-n", "team-a"),
    ):
        assert _can(k8s_cluster, control_plane, *allowed), allowed
    for denied in (
        ("create", "pods", "-n", "team-a"),
        ("get", "secrets", "-n", release.namespace),
        ("patch", "trainingjobs.carina.dev", "--subresource=status", "-n", "team-a"),
    ):
        assert not _can(k8s_cluster, control_plane, *denied), denied


def test_workers_may_do_nothing_and_get_no_token(
    k8s_cluster: TestCluster, release: Release
) -> None:
    for denied in (
        ("get", "pods", "-n", release.namespace),
        ("get", "trainingjobs.carina.dev", "-n", release.namespace),
        ("get", "configmaps", "-n", release.namespace),
    ):
        assert not _can(k8s_cluster, release.worker, *denied), denied
    account = k8s_cluster.get_json("serviceaccount", "carina-worker", "-n", release.namespace)
    assert account["automountServiceAccountToken"] is False


def test_an_example_training_job_is_accepted_where_the_chart_runs(
    k8s_cluster: TestCluster, release: Release
) -> None:
    example = ROOT / "examples" / "pretrain-tiny.yaml"
    k8s_cluster.kubectl("apply", "-n", release.namespace, "-f", str(example))
    job = k8s_cluster.get_json("trainingjob", "pretrain-tiny", "-n", release.namespace)
    assert job["spec"]["replicas"] == 2
    k8s_cluster.kubectl("delete", "-n", release.namespace, "-f", str(example), "--wait=false")


def test_an_upgrade_to_each_profile_keeps_the_release_healthy(release: Release) -> None:
    for profile in sorted((CHART / "profiles").glob("*.yaml")):
        helm(
            "upgrade",
            release.name,
            str(CHART),
            "-n",
            release.namespace,
            "--reuse-values",
            "-f",
            str(profile),
            "--wait",
            "--timeout",
            "3m",
        )
        status = json.loads(
            helm("status", release.name, "-n", release.namespace, "-o", "json").stdout
        )
        assert status["info"]["status"] == "deployed", profile.name


def _token_kubeconfig(cluster: TestCluster, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a TokenRequest token)."""
    token = cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    assert cluster.pki is not None
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": cluster.server,
                            "certificate-authority": str(cluster.pki.ca_crt),
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "test", "user": account}}],
            }
        )
    )
    return path


def test_the_real_operator_runs_jobs_with_only_the_charts_rights(
    k8s_cluster: TestCluster, release: Release, tmp_path: Path
) -> None:
    """`python -m carina.operators`, configured as the chart configures it, authenticated as
    the chart's operator account: it creates a job's workers and writes its status, and the
    API server never refuses it."""
    manifest = helm("get", "manifest", release.name, "-n", release.namespace).stdout
    [deployment] = [
        o
        for o in yaml.safe_load_all(manifest)
        if o and o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    kubeconfig = _token_kubeconfig(
        k8s_cluster, f"{release.name}-operator", release.namespace, tmp_path / "operator.kubeconfig"
    )
    env = {
        **os.environ,
        **env_of(container),
        "KUBECONFIG": str(kubeconfig),
        "POD_ID": "test-operator",
        "CARINA_OPERATOR_PORT": str(free_port()),
        "CARINA_OPERATOR_PROGRESS_INTERVAL": "0",
    }
    log = tmp_path / "operator.log"
    job = make_job("chart-rbac").with_replicas(2)
    with log.open("w") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "carina.operators"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        k8s_cluster.kubectl("apply", "-n", release.namespace, "-f", "-", input=json.dumps(job))

        def alive() -> None:
            if operator.poll() is not None:
                raise AssertionError(f"the operator exited:\n{log.read_text()[-4000:]}")

        def workers_and_status() -> bool:
            pods = k8s_cluster.get_json(
                "pods", "-n", release.namespace, "-l", "carina.dev/job=chart-rbac"
            )["items"]
            status = (
                k8s_cluster.get_json("trainingjob", "chart-rbac", "-n", release.namespace).get(
                    "status"
                )
                or {}
            )
            return len(pods) == 2 and bool(status.get("phase"))

        try:
            wait_until(
                workers_and_status, 60, "the operator to start the job's workers", alive=alive
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; operator log:\n{log.read_text()[-4000:]}") from None
        pods = k8s_cluster.get_json(
            "pods", "-n", release.namespace, "-l", "carina.dev/job=chart-rbac"
        )["items"]
        assert {p["spec"]["serviceAccountName"] for p in pods} == {"carina-worker"}
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        k8s_cluster.kubectl(
            "delete",
            "trainingjob",
            "chart-rbac",
            "-n",
            release.namespace,
            "--wait=false",
            check=False,
        )
    text = log.read_text()
    assert "Forbidden" not in text, text[-4000:]
    assert " 403" not in text, text[-4000:]


def test_the_real_control_plane_serves_with_only_the_charts_rights(
    k8s_cluster: TestCluster, release: Release, tmp_path: Path
) -> None:
    """The control plane, configured as the chart configures it and authenticated as the
    chart's control plane account, is ready, reviews a caller's token and submits a job."""
    manifest = helm("get", "manifest", release.name, "-n", release.namespace).stdout
    [deployment] = [
        o
        for o in yaml.safe_load_all(manifest)
        if o and o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-control-plane")
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    kubeconfig = _token_kubeconfig(
        k8s_cluster, f"{release.name}-control-plane", release.namespace, tmp_path / "cp.kubeconfig"
    )
    port = free_port()
    args = [a for a in container["args"] if not a.startswith(("--host", "--port"))]
    env = {**os.environ, **env_of(container), "CARINA_KUBECONFIG": str(kubeconfig)}
    log = tmp_path / "control-plane.log"
    # The caller: any account whose token the API server knows and that may manage
    # TrainingJobs here; the control plane's own account is one.
    caller = k8s_cluster.kubectl(
        "create", "token", f"{release.name}-control-plane", "-n", release.namespace
    ).stdout.strip()
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "carina.platform.controlplane.main:create_app",
                "--host=127.0.0.1",
                f"--port={port}",
                *args,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        def ready() -> bool:
            return httpx.get(f"{base}/readyz", timeout=5).status_code == 200

        def alive() -> None:
            if server.poll() is not None:
                raise AssertionError(f"the control plane exited:\n{log.read_text()[-4000:]}")

        wait_until(ready, 60, "the control plane to be ready", alive=alive)
        headers = {"Authorization": f"Bearer {caller}"}
        metrics = httpx.get(f"{base}/metrics", headers=headers, timeout=10)
        assert metrics.status_code == 200, metrics.text
        jobs = f"{base}/api/v1/namespaces/{release.namespace}/trainingjobs"
        created = httpx.post(jobs, json=make_job("via-api"), headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        events = httpx.get(f"{jobs}/via-api/events", headers=headers, timeout=30)
        assert events.status_code == 200, events.text
        refused = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
        k8s_cluster.kubectl(
            "delete",
            "trainingjob",
            "via-api",
            "-n",
            release.namespace,
            "--wait=false",
            check=False,
        )
