"""The chart's node health agent as `helm template` renders it: off by default, a DaemonSet on
every GPU node when on, locked down like Carina's other containers, and started with arguments
the agent's own parser accepts (so the chart and the code cannot drift apart)."""

from __future__ import annotations

from typing import Any

import pytest
from helm_chart import ALL_MONITORING, MONITORING_API, named, of_kind, render

from carina.operators.health.__main__ import parse_args

ON = ("--set", "healthAgent.enabled=true")


@pytest.fixture(scope="module")
def enabled() -> list[dict[str, Any]]:
    return render(*ON)


def _pod(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = named(objects, "DaemonSet", "-health-agent")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def test_the_agent_is_off_by_default() -> None:
    objects = render()
    assert not of_kind(objects, "DaemonSet")
    assert not [o for o in objects if o["metadata"]["name"].endswith("-health-agent")]


def test_the_agent_runs_on_every_gpu_node_even_tainted_ones(enabled: list[dict[str, Any]]) -> None:
    pod, _ = _pod(enabled)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"operator": "Exists"}]


def test_the_agent_sees_every_gpu_without_holding_one(enabled: list[dict[str, Any]]) -> None:
    pod, container = _pod(enabled)
    assert pod["runtimeClassName"] == "nvidia"
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"]["value"]  # nvidia-smi
    # A GPU request would make the node look busy to the agent's own idle check.
    for part in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"].get(part, {})
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_agent_is_locked_down_like_every_carina_container(
    enabled: list[dict[str, Any]],
) -> None:
    pod, container = _pod(enabled)
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    assert container["resources"]["limits"]["memory"]


def test_the_agent_reads_every_setting_the_chart_gives_it() -> None:
    objects = render(
        *ON,
        "--set",
        "healthAgent.interval=30",
        "--set",
        "healthAgent.fullInterval=3600",
        "--set",
        "healthAgent.port=9500",
        "--set",
        "healthAgent.hostDisk.enabled=true",
        "--set",
        "healthAgent.faultConfigMap=carina-health-faults",
    )
    pod, container = _pod(objects)
    args = [a.replace("$(NODE_NAME)", "vela-3") for a in container["args"]]
    cfg, parsed = parse_args([*args, "--node", "vela-3"])
    assert (cfg.interval, cfg.full_interval, parsed.port) == (30.0, 3600.0, 9500)
    assert container["ports"][0]["containerPort"] == 9500
    assert container["command"] == ["python", "-m", "carina.operators.health"]
    # The host's disk, read-only, and this node's key of the drill ConfigMap.
    assert cfg.disk_paths == ("/", "/host-disk")
    assert str(cfg.fault_file) == "/etc/carina/faults/vela-3"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["host-disk"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["faults"]["configMap"] == {"name": "carina-health-faults", "optional": True}


def test_the_agent_may_write_nodes_and_list_pods_and_nothing_more(
    enabled: list[dict[str, Any]],
) -> None:
    role = named(enabled, "ClusterRole", "-health-agent")
    rules = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert rules == {
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "patch"),
        ("", "nodes/status", "patch"),
        ("", "pods", "list"),
    }
    binding = named(enabled, "ClusterRoleBinding", "-health-agent")
    pod, _ = _pod(enabled)
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert named(enabled, "ServiceAccount", "-health-agent")


def test_prometheus_scrapes_the_agents_when_pod_monitors_are_on() -> None:
    objects = render(*ON, *ALL_MONITORING, *MONITORING_API)
    agents = named(objects, "PodMonitor", "-health-agent")
    daemon = named(objects, "DaemonSet", "-health-agent")
    selected = agents["spec"]["selector"]["matchLabels"]
    assert selected.items() <= daemon["spec"]["template"]["metadata"]["labels"].items()
    [endpoint] = agents["spec"]["podMetricsEndpoints"]
    ports = {
        p["name"] for c in daemon["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert endpoint["port"] in ports
    # Without the agent, only the workers' PodMonitor.
    off = render(*ALL_MONITORING, *MONITORING_API)
    assert [m["metadata"]["name"] for m in of_kind(off, "PodMonitor")] == ["carina-workers"]
