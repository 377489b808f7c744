"""The chart as `helm template` renders it: components, hardening, RBAC, optional monitoring.

Where the chart hands settings to Carina's own code (operator and control plane environment,
worker pod labels and ports), the tests feed the rendered values to that code, so the two
cannot drift apart silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import make_job
from helm_chart import (
    ALL_MONITORING,
    CHART,
    MONITORING_API,
    PROFILES,
    env_of,
    helm,
    named,
    of_kind,
    render,
)

from carina.platform.api.types import TrainingJob

RULES = CHART.parents[1] / "dashboards" / "rules" / "carina-alerts.yaml"
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"], c)
        for d in of_kind(objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


# -- components ------------------------------------------------------------------------------


def test_default_install_has_operator_control_plane_and_their_accounts(
    default: list[dict[str, Any]],
) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in default}
    assert {
        ("Deployment", "carina-operator"),
        ("Deployment", "carina-control-plane"),
        ("Service", "carina-control-plane"),
        ("ServiceAccount", "carina-operator"),
        ("ServiceAccount", "carina-control-plane"),
        ("ServiceAccount", "carina-worker"),
        ("ClusterRole", "carina-operator"),
        ("ClusterRole", "carina-control-plane"),
        ("ClusterKopfPeering", "carina"),
    } <= names


def test_operator_runs_two_replicas_that_meet_in_one_peering_object(
    default: list[dict[str, Any]],
) -> None:
    operator = named(default, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 2
    [container] = operator["spec"]["template"]["spec"]["containers"]
    [peering] = of_kind(default, "ClusterKopfPeering")
    assert env_of(container)["CARINA_OPERATOR_PEERING"] == peering["metadata"]["name"]
    # kopf names each peer after POD_ID: the pod's name, unique per replica.
    [pod_id] = [e for e in container["env"] if e["name"] == "POD_ID"]
    assert pod_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert named(default, "PodDisruptionBudget", "-operator")["spec"]["minAvailable"] == 1


def test_an_operator_watching_namespaces_peers_in_each_of_them() -> None:
    objects = render("--set", "operator.watchNamespaces={team-a,team-b}")
    assert of_kind(objects, "ClusterKopfPeering") == []
    assert sorted(p["metadata"]["namespace"] for p in of_kind(objects, "KopfPeering")) == [
        "team-a",
        "team-b",
    ]


def test_the_peering_crds_come_from_the_subchart_and_can_be_left_out() -> None:
    with_crds = helm("template", "carina", str(CHART), "--include-crds").stdout
    assert "name: clusterkopfpeerings.kopf.dev" in with_crds
    for kind in ("trainingjobs", "clusterqueues", "localqueues", "trainingpriorityclasses"):
        assert f"name: {kind}.carina.dev" in with_crds
    without = helm(
        "template",
        "carina",
        str(CHART),
        "--include-crds",
        "--set",
        "operator.peering.installCRDs=false",
    ).stdout
    assert "name: clusterkopfpeerings.kopf.dev" not in without


def test_the_operator_reads_every_setting_the_chart_gives_it() -> None:
    from carina.operators.runtime.settings import Settings

    objects = render(
        "--set",
        "operator.watchNamespaces={team-a,team-b}",
        "--set",
        "operator.port=9099",
        "--set",
        "operator.concurrentReconciles=7",
        "--set",
        "workers.image.tag=v9",
        "--set",
        "workers.metricsPort=9999",
        "--set",
        "workers.checkpointRoot=s3://elsewhere",
        "--set",
        "workers.shutdownTimeoutSeconds=222",
        "--set",
        "imagePullSecrets[0].name=regcred",
    )
    [container] = named(objects, "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    settings = Settings.from_env(env_of(container))
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.peering == "carina"
    assert settings.port == 9099
    assert settings.workers == 7
    assert settings.render.image == "ghcr.io/carina-dev/carina-worker:v9"
    assert settings.render.metrics_port == 9999
    assert settings.render.checkpoint_root == "s3://elsewhere"
    assert settings.render.shutdown_timeout_seconds == 222
    assert settings.render.service_account == "carina-worker"
    assert settings.render.image_pull_secrets == ("regcred",)
    assert container["ports"][0]["containerPort"] == 9099


def test_the_control_plane_reads_its_settings_from_the_chart() -> None:
    from carina.platform.controlplane.settings import Settings

    objects = render("--set", "controlPlane.prometheusUrl=http://prometheus:9090")
    [container] = named(objects, "Deployment", "-control-plane")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(container)
    assert all(name.startswith("CARINA_") for name in env)
    settings = Settings(**{k.removeprefix("CARINA_").lower(): v for k, v in env.items()})
    assert settings.backend == "kubernetes"
    assert settings.prometheus_url == "http://prometheus:9090"
    assert "--port=8000" in container["args"]


def test_the_control_plane_can_be_left_out() -> None:
    objects = render("--set", "controlPlane.enabled=false")
    assert not [o for o in objects if "control-plane" in o["metadata"]["name"]]


def test_images_default_to_the_chart_app_version_and_a_digest_pins_them(
    default: list[dict[str, Any]],
) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {name: c["image"] for name, _, c in _containers(default)}
    assert images == {
        "carina-operator": f"ghcr.io/carina-dev/carina-operator:{app_version}",
        "carina-control-plane": f"ghcr.io/carina-dev/carina-server:{app_version}",
    }
    pinned = render("--set", "operator.image.digest=sha256:" + "a" * 64)
    [container] = named(pinned, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/carina-dev/carina-operator@sha256:" + "a" * 64


# -- hardening -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [(), *(("-f", str(p)) for p in PROFILES)],
    ids=["default", *(p.stem for p in PROFILES)],
)
def test_every_carina_container_is_locked_down(values: tuple[str, ...]) -> None:
    for name, pod, container in _containers(render(*values)):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert "livenessProbe" in container, name
        assert container["resources"]["requests"], name
        assert container["resources"]["limits"]["memory"], name
        # A read-only root needs somewhere to write temporary files.
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name


# -- RBAC ------------------------------------------------------------------------------------


def _rules(objects: list[dict[str, Any]], suffix: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in named(objects, "ClusterRole", suffix)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_no_role_uses_wildcards_or_reads_secrets(default: list[dict[str, Any]]) -> None:
    for role in of_kind(default, "ClusterRole") + of_kind(default, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], role["metadata"]["name"]
            assert "secrets" not in rule["resources"], role["metadata"]["name"]


def test_the_operator_may_run_jobs_and_nothing_more(default: list[dict[str, Any]]) -> None:
    rules = _rules(default, "-operator")
    for needed in [
        ("carina.dev", "trainingjobs", "watch"),
        ("carina.dev", "trainingjobs/status", "patch"),
        ("", "pods", "create"),
        ("", "pods", "delete"),
        ("", "services", "create"),
        ("", "events", "create"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
        # Admission to the queues' quota, by one writer the replicas elect with a Lease.
        ("carina.dev", "clusterqueues/status", "patch"),
        ("carina.dev", "localqueues/status", "patch"),
        ("", "namespaces", "get"),
        # The admission writer's inputs come from watches (listed once at start-up).
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        # Node health: the verdicts, the unhealthy taint, asking the agent for a check.
        ("", "nodes", "watch"),
        ("", "nodes", "patch"),
    ]:
        assert needed in rules
    assert {resource for _, resource, _ in rules} <= {
        "trainingjobs",
        "trainingjobs/status",
        "trainingjobs/finalizers",
        "pods",
        "services",
        "events",
        "namespaces",
        "customresourcedefinitions",
        "clusterkopfpeerings",
        "kopfpeerings",
        "clusterqueues",
        "clusterqueues/status",
        "localqueues",
        "localqueues/status",
        "trainingpriorityclasses",
        "leases",
        "nodes",
    }
    # Nodes are read and patched (taints, an annotation), never created or deleted.
    assert not {verb for _, resource, verb in rules if resource == "nodes"} & {"create", "delete"}
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "create") not in rules
    # The queues are the cluster admin's to write: the operator reads them, patches status.
    for kind in ("clusterqueues", "localqueues", "trainingpriorityclasses"):
        assert {verb for _, resource, verb in rules if resource == kind} == {"get", "list", "watch"}


def test_the_control_plane_reviews_callers_and_manages_jobs_only(
    default: list[dict[str, Any]],
) -> None:
    rules = _rules(default, "-control-plane")
    assert ("authentication.k8s.io", "tokenreviews", "create") in rules
    assert ("authorization.k8s.io", "subjectaccessreviews", "create") in rules
    for verb in ("get", "list", "create", "update", "patch", "delete"):
        assert ("carina.dev", "trainingjobs", verb) in rules
    assert ("", "pods/log", "get") in rules
    assert not {r for r in rules if r[1] in {"pods", "services", "configmaps", "secrets"}}
    for kind in ("clusterqueues", "localqueues", "trainingpriorityclasses"):
        assert {verb for _, resource, verb in rules if resource == kind} == {"get", "list", "watch"}


def test_workers_get_an_account_with_no_rights_and_no_token(default: list[dict[str, Any]]) -> None:
    worker = named(default, "ServiceAccount", "carina-worker")
    assert worker["automountServiceAccountToken"] is False
    subjects = [
        s["name"]
        for b in of_kind(default, "ClusterRoleBinding") + of_kind(default, "RoleBinding")
        for s in b["subjects"]
    ]
    assert "carina-worker" not in subjects


def test_the_worker_account_exists_in_each_job_namespace() -> None:
    objects = render("--set", "workers.namespaces={team-a,team-b}")
    accounts = [
        a for a in of_kind(objects, "ServiceAccount") if a["metadata"]["name"] == "carina-worker"
    ]
    assert sorted(a["metadata"]["namespace"] for a in accounts) == ["team-a", "team-b"]


def test_worker_pods_run_as_the_charts_worker_account() -> None:
    from carina.operators.runtime.settings import Settings
    from carina.platform.planning.render import build_worker_pod

    [container] = named(render(), "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    settings = Settings.from_env(env_of(container))
    pod = build_worker_pod(TrainingJob.parse(make_job()), 0, 0, settings.render)
    assert pod["spec"]["serviceAccountName"] == "carina-worker"
    assert pod["spec"]["automountServiceAccountToken"] is False


# -- monitoring ------------------------------------------------------------------------------


def test_monitoring_is_off_by_default(default: list[dict[str, Any]]) -> None:
    assert not [o for o in default if o["kind"] in MONITORING_KINDS]
    assert not [o for o in default if "dashboard" in o["metadata"]["name"]]


@pytest.mark.parametrize("key", ["serviceMonitor", "podMonitor", "prometheusRule"])
def test_a_monitor_without_the_prometheus_operator_api_fails_loudly(key: str) -> None:
    result = helm(
        "template", "carina", str(CHART), "--set", f"monitoring.{key}.enabled=true", check=False
    )
    assert result.returncode != 0
    assert f"monitoring.{key} is enabled" in result.stderr
    assert "--api-versions monitoring.coreos.com/v1" in result.stderr


def test_monitoring_renders_when_turned_on() -> None:
    objects = render(*ALL_MONITORING, *MONITORING_API)
    monitors = of_kind(objects, "ServiceMonitor")
    jobs = {m["spec"]["endpoints"][0]["relabelings"][0]["replacement"] for m in monitors}
    # The alert rules and dashboards select these scrape job names.
    assert jobs == {"carina-operator", "carina-control-plane"}
    assert all(m["spec"]["endpoints"][0]["honorLabels"] for m in monitors)
    [pod_monitor] = of_kind(objects, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    assert len(of_kind(objects, "PrometheusRule")) == 1


def test_the_monitors_find_the_services_they_scrape() -> None:
    objects = render(*ALL_MONITORING, *MONITORING_API)
    for monitor in of_kind(objects, "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        [service] = [
            s
            for s in of_kind(objects, "Service")
            if wanted.items() <= s["metadata"]["labels"].items()
        ]
        port = monitor["spec"]["endpoints"][0]["port"]
        assert port in {p["name"] for p in service["spec"]["ports"]}


def test_the_pod_monitor_selects_the_operators_worker_pods() -> None:
    from carina.platform.planning.render import RenderSettings, build_worker_pod

    [pod_monitor] = of_kind(render(*ALL_MONITORING, *MONITORING_API), "PodMonitor")
    pod = build_worker_pod(TrainingJob.parse(make_job()), 0, 0, RenderSettings())
    wanted = pod_monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_the_prometheus_rule_is_the_alert_file_unchanged() -> None:
    [rule] = of_kind(render(*ALL_MONITORING, *MONITORING_API), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_the_dashboard_configmaps_hold_the_committed_json() -> None:
    objects = render(*ALL_MONITORING, *MONITORING_API)
    shipped = {
        key: value
        for cm in of_kind(objects, "ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, value in cm["data"].items()
    }
    committed = {p.name: p.read_text() for p in (CHART.parents[1] / "dashboards").glob("*.json")}
    assert shipped.keys() == committed.keys()
    for name, text in committed.items():
        assert shipped[name] == text.rstrip("\n")


def test_the_packaged_chart_carries_the_rules_and_dashboards_themselves(tmp_path: Path) -> None:
    # files/dashboards is a link into the repository; `helm package` must store the files.
    helm("package", str(CHART), "-d", str(tmp_path))
    [package] = tmp_path.glob("carina-*.tgz")
    out = helm("template", "carina", str(package), *ALL_MONITORING, *MONITORING_API).stdout
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    [rule] = of_kind(objects, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    dashboards = (CHART.parents[1] / "dashboards").glob("*.json")
    assert len(
        [o for o in of_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]]
    ) == len(list(dashboards))
