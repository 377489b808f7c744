"""Fixtures for integration tests: a real Kubernetes control plane, Prometheus and S3.

Servers start once per session, on loopback, and stop at the end (also when pytest dies:
the processes carry a parent-death signal). When a binary is missing the tests that need it
are skipped with the command that builds it, unless CARINA_REQUIRE_CLUSTER=1 (CI), where a
missing binary is a failure.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from operator_process import OperatorProcess
from postgres_server import PostgresMissing, PostgresServer

from carina.testcluster import (
    PrometheusServer,
    S3Bucket,
    S3Server,
    TestCluster,
    ToolsMissing,
    find_binaries,
)
from carina.testcluster.binaries import tool_binary
from carina.testcluster.processes import wait_until
from carina.testcluster.prometheus import prometheus_binary

REQUIRE_ENV = "CARINA_REQUIRE_CLUSTER"

# fixture -> marker: a test that uses the fixture gets the marker, so `-m "not k8s"` works
# even where a test forgot to mark itself.
_MARKER_OF_FIXTURE = {
    "k8s_cluster": "k8s",
    "namespace": "k8s",
    "k8s_client": "k8s",
    "prometheus": "prometheus",
    "s3_server": "s3",
    "s3": "s3",
    "postgres": "postgres",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Add the k8s/prometheus/s3 marker to every test that uses the matching fixture."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if marker := _MARKER_OF_FIXTURE.get(fixture):
                item.add_marker(marker)


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the environment demands the real servers (CI)."""
    if os.environ.get(REQUIRE_ENV, "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


# -- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[TestCluster]:
    """The session's test cluster (default pools: cpu, vela, blue-vela); KUBECONFIG points at it."""
    try:
        find_binaries()
    except ToolsMissing as e:
        _unavailable(f"test control plane not built: {e}")
    cluster = TestCluster()
    cluster.start()
    with pytest.MonkeyPatch.context() as mp:
        # kopf, the kubernetes client and kubectl subprocesses all read KUBECONFIG.
        mp.setenv("KUBECONFIG", str(cluster.kubeconfig))
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def k8s_client(k8s_cluster: TestCluster) -> Any:
    """A `kubernetes.client.ApiClient` for the test cluster (needs the kubernetes package)."""
    kubernetes = pytest.importorskip("kubernetes")
    return kubernetes.config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig))


def _namespace_name(node_name: str) -> str:
    # DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters.
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:50].rstrip("-")
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(k8s_cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (without waiting)."""
    name = _namespace_name(request.node.name)
    k8s_cluster.kubectl("create", "namespace", name)
    # Admission refuses pods until kube-controller-manager has made the default ServiceAccount.
    wait_until(
        lambda: (
            k8s_cluster.kubectl(
                "get", "serviceaccount", "default", "-n", name, check=False
            ).returncode
            == 0
        ),
        30,
        f"serviceaccount default in {name}",
    )
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- Prometheus -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    """A real Prometheus (scrape interval 1s); add loopback targets with `add_targets`."""
    try:
        prometheus_binary()
    except ToolsMissing as e:
        _unavailable(str(e))
    with PrometheusServer(scrape_interval="1s") as server:
        yield server


# -- S3 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's MinIO server."""
    try:
        tool_binary("minio", "minio")
    except ToolsMissing as e:
        _unavailable(f"S3 server not built: {e}")
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, request: pytest.FixtureRequest) -> S3Bucket:
    """A fresh, empty bucket for this test on the session's S3 server."""
    # Bucket names: 3-63 characters of lowercase letters, digits and '-'.
    return s3_server.create_bucket(_namespace_name(request.node.name)[-40:].lstrip("-"))


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (run as a non-root user when the tests run as root)."""
    try:
        server = PostgresServer()
    except PostgresMissing as e:
        _unavailable(str(e))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.database()


@pytest.fixture
def operator(k8s_cluster: TestCluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """A running operator for the test's namespace; its log's tail is printed afterwards."""
    op = OperatorProcess(k8s_cluster, namespace, tmp_path / "operator.log").start()
    try:
        yield op
    finally:
        op.stop()
        print(f"--- operator log (tail)\n{op.log_tail()}")
