"""The node health agent against the real control plane, for one of kwok's fake GPU nodes.

kwok's nodes run no containers, so the agent runs here on the host, as a subprocess, for the
fake node `vela-1`: its generic checks measure this machine, its GPU checks find no GPU
tooling and say so (UNSUPPORTED, never a pass), and a fault file stands in for a broken GPU.
The cluster is shared by the whole session, so every test gives the node back as it found it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import render

from carina.platform.api.health import (
    CHECK_REQUESTED_ANNOTATION,
    CONDITION_TYPE,
    FULL_PASS_LABEL,
    HEALTH_CHECK_LABEL,
    HEALTH_LABEL,
)
from carina.testcluster import TestCluster
from carina.testcluster.processes import free_port, wait_until

NODE = "vela-1"
TIMEOUT = 60


def agent_command(node: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "carina.operators.health", "--node", node, *args]


def run_once(
    cluster: TestCluster, *args: str, node: str = NODE
) -> subprocess.CompletedProcess[str]:
    """One round of the agent for `node`; fails the test with its output if it exits non-zero."""
    done = subprocess.run(
        agent_command(node, "--once", *args),
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"agent exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def node_labels(cluster: TestCluster) -> dict[str, str]:
    return dict(cluster.get_json("node", NODE)["metadata"].get("labels") or {})


def condition(cluster: TestCluster, type_: str = CONDITION_TYPE) -> dict[str, Any] | None:
    conditions = cluster.get_json("node", NODE).get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def remove_condition(cluster: TestCluster, node: str = NODE) -> None:
    """Take the agent's condition off the node (the session's nodes are shared)."""
    conditions = cluster.get_json("node", node).get("status", {}).get("conditions") or []
    for i, c in enumerate(conditions):
        if c["type"] == CONDITION_TYPE:
            # `test` first: if kwok rewrote the list meanwhile, the patch fails instead of
            # removing someone else's condition.
            patch = [
                {"op": "test", "path": f"/status/conditions/{i}/type", "value": CONDITION_TYPE},
                {"op": "remove", "path": f"/status/conditions/{i}"},
            ]
            cluster.kubectl(
                "patch", "node", node, "--subresource=status", "--type=json", "-p",
                json.dumps(patch),
            )  # fmt: skip
            return


@pytest.fixture
def restored_node(k8s_cluster: TestCluster) -> Iterator[str]:
    """NODE, with the agent's labels, annotation and condition removed afterwards."""
    try:
        yield NODE
    finally:
        k8s_cluster.kubectl(
            "label", "node", NODE, f"{HEALTH_LABEL}-", f"{HEALTH_CHECK_LABEL}-",
            f"{FULL_PASS_LABEL}-",
        )  # fmt: skip
        k8s_cluster.kubectl("annotate", "node", NODE, f"{CHECK_REQUESTED_ANNOTATION}-")
        remove_condition(k8s_cluster)


def _ready(cluster: TestCluster) -> bool:
    ready = condition(cluster, "Ready")
    return ready is not None and ready["status"] == "True"


def _not_ready(cluster: TestCluster) -> bool:
    ready = condition(cluster, "Ready")
    return ready is not None and ready["status"] == "False"


# -- the verdict on a real Node ----------------------------------------------------------------


@pytest.mark.usefixtures("restored_node")
def test_a_fault_evicts_the_node_and_clearing_it_passes_again(
    k8s_cluster: TestCluster, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.json"
    drill = "drill: 2 uncorrectable ECC errors on GPU 3"
    faults.write_text(json.dumps({"gpu-ecc": {"result": "EVICT", "message": drill}}))

    evicted = run_once(k8s_cluster, "--fault-file", str(faults))
    assert evicted.stdout.startswith(f"{NODE}: EVICT (gpu-ecc)")
    labels = node_labels(k8s_cluster)
    assert (labels[HEALTH_LABEL], labels[HEALTH_CHECK_LABEL]) == ("EVICT", "gpu-ecc")
    unhealthy = condition(k8s_cluster)
    assert unhealthy is not None
    assert (unhealthy["status"], unhealthy["reason"]) == ("False", "ChecksEvict")
    assert f"gpu-ecc EVICT: {drill}" in unhealthy["message"]
    assert _ready(k8s_cluster)  # the kubelet's (kwok's) conditions are untouched

    faults.unlink()  # the drill is over
    passed = run_once(k8s_cluster, "--fault-file", str(faults))
    assert passed.stdout.startswith(f"{NODE}: PASS")
    labels = node_labels(k8s_cluster)
    assert (labels[HEALTH_LABEL], labels[HEALTH_CHECK_LABEL]) == ("PASS", "")
    healthy = condition(k8s_cluster)
    assert healthy is not None
    assert (healthy["status"], healthy["reason"]) == ("True", "ChecksPassed")
    assert healthy["lastTransitionTime"] >= unhealthy["lastTransitionTime"]


@pytest.mark.usefixtures("restored_node")
def test_without_a_gpu_the_gpu_checks_say_unsupported_and_never_count_as_passed(
    k8s_cluster: TestCluster,
) -> None:
    out = run_once(k8s_cluster).stdout
    for check in ("gpu-count", "gpu-ecc", "gpu-row-remap", "gpu-clocks", "gpu-pcie"):
        assert f"  {check}" in out
        [line] = [ln for ln in out.splitlines() if ln.strip().startswith(check + " ")]
        assert "UNSUPPORTED" in line
        assert "nvidia-smi not found" in line
    # The idle node's first round runs the invasive checks; with no GPU tooling they cannot.
    assert "invasive checks ran (never run)" in out
    for check in ("gpu-bandwidth", "gpu-allreduce", "dcgm-diag"):
        [line] = [ln for ln in out.splitlines() if ln.strip().startswith(check + " ")]
        assert "UNSUPPORTED" in line
    message = condition(k8s_cluster)["message"]  # type: ignore[index]
    assert (
        "unsupported, not counted as passed: gpu-count, gpu-ecc, gpu-row-remap, gpu-clocks,"
        " gpu-pcie, gpu-bandwidth, gpu-allreduce (no GPU tooling on this node"
    ) in message
    assert "dcgm-diag (dcgmi not installed)" in message
    # A full run where nothing could run is no full pass: no stamp for a preflight to trust.
    assert FULL_PASS_LABEL not in node_labels(k8s_cluster)


@pytest.mark.usefixtures("restored_node")
def test_a_pod_holding_the_nodes_gpus_keeps_the_invasive_checks_away(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trainer-worker-0", "namespace": namespace},
        "spec": {
            "nodeName": NODE,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "worker",
                    "image": "carina-worker",
                    "resources": {"limits": {"nvidia.com/gpu": "8"}},
                }
            ],
        },
    }
    k8s_cluster.apply([pod], server_side=False)
    k8s_cluster.kubectl(
        "annotate", "node", NODE, f"{CHECK_REQUESTED_ANNOTATION}=2020-01-01T00:00:00Z",
        "--overwrite",
    )  # fmt: skip
    try:
        out = run_once(k8s_cluster).stdout
    finally:
        # Other tests place gangs on this node: give its GPUs back before they run.
        k8s_cluster.kubectl(
            "delete", "pod", "trainer-worker-0", "-n", namespace, "--grace-period=0", "--force"
        )
        wait_until(
            lambda: not k8s_cluster.get_json("pods", "-n", namespace)["items"],
            TIMEOUT,
            "the pod to be gone",
        )
    assert f"invasive checks skipped: GPUs in use by {namespace}/trainer-worker-0" in out
    assert "gpu-bandwidth" not in out


@pytest.mark.usefixtures("restored_node")
def test_kwoks_node_stages_keep_the_agents_condition(k8s_cluster: TestCluster) -> None:
    # kwok writes a fake node's conditions from a template as a strategic merge patch of
    # status; conditions merge by type, so a condition kwok does not know is kept.
    run_once(k8s_cluster)
    written = condition(k8s_cluster)
    assert written is not None
    try:
        k8s_cluster.set_node_ready(NODE, False)
        wait_until(lambda: _not_ready(k8s_cluster), TIMEOUT, f"{NODE} NotReady")
    finally:
        k8s_cluster.set_node_ready(NODE, True)
        wait_until(lambda: _ready(k8s_cluster), TIMEOUT, f"{NODE} Ready again")
    assert condition(k8s_cluster) == written


# -- the chart's account ---------------------------------------------------------------------


def _token_kubeconfig(cluster: TestCluster, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a token the API server issues)."""
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    assert cluster.pki is not None
    server = {"server": cluster.server, "certificate-authority": str(cluster.pki.ca_crt)}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [{"name": "test", "cluster": server}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "test", "user": account}}],
            }
        )
    )
    return path


@pytest.mark.usefixtures("restored_node")
def test_the_agent_does_its_round_with_only_the_charts_rights(
    k8s_cluster: TestCluster, namespace: str, tmp_path: Path
) -> None:
    """The chart's account and role, applied for real; the agent, started with the chart's
    arguments and that account's token, reads, lists and writes without being refused."""
    release = f"carina-{namespace[-6:]}"
    objects = render("--set", "healthAgent.enabled=true", release=release, namespace=namespace)
    ours = [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "health-agent"
    ]
    [daemonset] = [o for o in ours if o["kind"] == "DaemonSet"]
    rbac = [o for o in ours if o["kind"] != "DaemonSet"]
    assert sorted(o["kind"] for o in rbac) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
    ]
    k8s_cluster.apply(rbac, server_side=False)
    try:
        account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
        kubeconfig = _token_kubeconfig(k8s_cluster, account, namespace, tmp_path / "sa.yaml")
        [container] = daemonset["spec"]["template"]["spec"]["containers"]
        request = f"{CHECK_REQUESTED_ANNOTATION}=2020-01-01T00:00:00Z"
        k8s_cluster.kubectl("annotate", "node", NODE, request, "--overwrite")
        done = subprocess.run(
            [sys.executable, "-m", "carina.operators.health", *container["args"], "--once"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "NODE_NAME": NODE},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for kind in ("ClusterRoleBinding", "ClusterRole"):
            [obj] = [o for o in rbac if o["kind"] == kind]
            k8s_cluster.kubectl("delete", kind.lower(), obj["metadata"]["name"], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Forbidden" not in done.stdout + done.stderr
    assert "invasive checks ran (requested)" in done.stdout  # the pods list was allowed
    assert node_labels(k8s_cluster)[HEALTH_LABEL] == "PASS"
    assert condition(k8s_cluster) is not None


# -- the long-running agent ------------------------------------------------------------------


@pytest.mark.usefixtures("restored_node")
def test_the_agent_serves_its_verdict_as_metrics_and_stops_on_sigterm(
    k8s_cluster: TestCluster, tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen(
        agent_command(NODE, "--interval", "1", "--full-interval", "0", "--port", str(port)),
        env={**os.environ, "KUBECONFIG": str(k8s_cluster.kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def state_pass() -> bool:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            page = r.read().decode()
        return f'carina_node_health_state{{node="{NODE}",state="PASS"}} 1.0' in page

    try:
        wait_until(state_pass, TIMEOUT, "the agent's metrics to show PASS")
        assert node_labels(k8s_cluster)[HEALTH_LABEL] == "PASS"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        print((tmp_path / "agent.log").read_text()[-3000:])


# -- entry points ----------------------------------------------------------------------------


def test_carina_health_agent_without_a_cluster_says_so_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "missing-kubeconfig"), HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "carina.platform", "health-agent", "--node", "n", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no cluster to talk to" in result.stderr
    assert "Traceback" not in result.stderr


def test_carina_health_agent_needs_a_node_name() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    result = subprocess.run(
        [sys.executable, "-m", "carina.platform", "health-agent", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no node: pass --node or set NODE_NAME" in result.stderr
