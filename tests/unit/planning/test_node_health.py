"""Node health as planning reads it: which nodes take workers, taints, and gangs that move."""

from __future__ import annotations

import pytest
from planning_fakes import at, failed, running, tj

from carina.platform.api.health import (
    CONDITION_TYPE,
    FULL_PASS_LABEL,
    HEALTH_CHECK_LABEL,
    HEALTH_LABEL,
    UNHEALTHY_TAINT,
    Health,
)
from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import Phase, TrainingJobStatus
from carina.platform.planning.actions import FailJob, RestartGang, SuspendWorkers
from carina.platform.planning.engine import plan
from carina.platform.planning.nodes import (
    healthy_capacity,
    node_info,
    preflight,
    taints_wanted,
)
from carina.platform.planning.render import RenderSettings, build_worker_pod
from carina.platform.planning.status import get_condition

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def node(health: str | None = None, *, taints=(), ready="True", check="", message="", **spec):
    labels = {"carina.dev/pool": "vela"}
    if health is not None:
        labels[HEALTH_LABEL] = health
        labels[HEALTH_CHECK_LABEL] = check
    conditions = [{"type": "Ready", "status": ready}]
    if message:
        conditions.append({"type": CONDITION_TYPE, "status": "False", "message": message})
    return {
        "metadata": {"name": "vela-1", "labels": labels, "resourceVersion": "7"},
        "spec": {"taints": list(taints), **spec},
        "status": {
            "allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"},
            "conditions": conditions,
        },
    }


def test_a_node_reads_as_its_labels_resources_and_verdict():
    info = node_info(node("EVICT", check="gpu-ecc", message="GPU 3: 2 uncorrectable errors"))
    assert info.health == Health.EVICT
    assert info.evict
    assert info.allocatable["nvidia.com/gpu"] == 8
    assert info.allocatable["memory"] == 2**40
    assert "GPU 3: 2 uncorrectable errors" in info.health_reason
    assert "vela-1" in info.health_reason


@pytest.mark.parametrize(
    ("body", "usable"),
    [
        (node(), True),  # never checked: a cluster without the agent works as before
        (node("PASS"), True),
        (node("WARN"), False),
        (node("EVICT"), False),
        (node("PASS", ready="False"), False),
        (node("PASS", unschedulable=True), False),
        (node("PASS", taints=[UNHEALTHY_TAINT]), False),  # untainting not done yet
        (node("PASS", taints=[GPU_TAINT]), True),
        (node("SOMETHING-ELSE"), True),  # not our verdict: ignored
    ],
)
def test_new_workers_land_only_on_usable_nodes(body, usable):
    assert node_info(body).usable is usable


@pytest.mark.parametrize(
    ("health", "taints", "wanted"),
    [
        ("EVICT", [GPU_TAINT], [GPU_TAINT, UNHEALTHY_TAINT]),
        ("EVICT", [GPU_TAINT, UNHEALTHY_TAINT], None),  # already tainted
        ("WARN", [UNHEALTHY_TAINT], None),  # not passing yet: stays tainted
        ("WARN", [], None),  # degraded, not broken: not tainted
        ("PASS", [GPU_TAINT, UNHEALTHY_TAINT], [GPU_TAINT]),  # passes again: returned
        (None, [UNHEALTHY_TAINT], []),  # the verdict taken off by hand: returned
        ("PASS", [GPU_TAINT], None),
    ],
)
def test_broken_nodes_are_tainted_and_returned_when_they_pass(health, taints, wanted):
    got = taints_wanted(node_info(node(health, taints=taints)))
    assert got == wanted


BROKEN = {"vela-1": "node vela-1 is EVICT: gpu-ecc: GPU 3: 2 uncorrectable errors"}


def running_status(restarts: int = 0) -> TrainingJobStatus:
    return TrainingJobStatus(phase=Phase.RUNNING, restarts=restarts)


def test_a_gang_on_a_broken_node_saves_and_restarts_elsewhere_as_infrastructure():
    job = tj(2)
    job.status = running_status()
    workers = [running(0, node="vela-0"), running(1, node="vela-1")]
    decided = plan(job, workers, at(10), unhealthy=BROKEN)
    assert decided.action == RestartGang(
        Reason.NODE_UNHEALTHY,
        1,
        None,
        "worker 1 is on a broken node; " + BROKEN["vela-1"],
    )
    status = decided.status
    assert status.phase == Phase.RESTARTING
    assert status.restarts_by_reason.infrastructure == 1
    assert status.restarts_by_reason.application == 0
    restarting = get_condition(status, ConditionType.RESTARTING)
    assert restarting is not None
    assert restarting.reason == Reason.NODE_UNHEALTHY
    assert "gpu-ecc" in restarting.message
    warnings = [e for e in decided.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == [Reason.NODE_UNHEALTHY]


def test_a_gang_clear_of_broken_nodes_runs_on():
    job = tj(2)
    job.status = running_status()
    workers = [running(0, node="vela-0"), running(1, node="vela-2")]
    decided = plan(job, workers, at(10), unhealthy=BROKEN)
    assert not isinstance(decided.action, RestartGang)
    assert decided.status.phase == Phase.RUNNING


def test_the_old_generation_leaving_a_broken_node_is_not_moved_twice():
    job = tj(2)
    job.status = running_status(restarts=1)
    # Generation 0 is still stopping on the broken node; generation 1 waits for it.
    workers = [running(0, restart=0, node="vela-1"), running(1, restart=0, node="vela-0")]
    decided = plan(job, workers, at(10), unhealthy=BROKEN)
    assert decided.status.restarts == 1


@pytest.mark.parametrize(
    ("spec", "workers", "kind"),
    [
        ({"suspend": True}, [running(0, node="vela-1")], SuspendWorkers),
        (
            {"failurePolicy": {"permanentExitCodes": [3]}},
            [failed(0, 3, node="vela-0"), running(1, node="vela-1")],
            FailJob,
        ),
    ],
)
def test_a_suspension_or_failure_goes_before_moving(spec, workers, kind):
    job = tj(2, **spec)
    job.status = running_status()
    assert isinstance(plan(job, workers, at(10), unhealthy=BROKEN).action, kind)


def required_expressions(pod):
    node = pod["spec"]["affinity"]["nodeAffinity"]
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]
    return [t["matchExpressions"] for t in terms["nodeSelectorTerms"]]


def test_every_worker_avoids_degraded_and_broken_nodes():
    pod = build_worker_pod(tj(2), 0, 0, RenderSettings())
    [expressions] = required_expressions(pod)
    assert {"key": HEALTH_LABEL, "operator": "NotIn", "values": ["WARN", "EVICT"]} in expressions
    assert all(e["key"] != FULL_PASS_LABEL for e in expressions)


def test_a_preflight_gated_worker_needs_a_recent_full_pass():
    pod = build_worker_pod(tj(2), 0, 0, RenderSettings(), full_pass_after=1_790_000_000)
    [expressions] = required_expressions(pod)
    assert {"key": FULL_PASS_LABEL, "operator": "Gt", "values": ["1790000000"]} in expressions


def test_a_users_node_affinity_keeps_the_health_rule_in_each_of_its_terms():
    rack = {"key": "rack", "operator": "In", "values": ["r1"]}
    zone = {"key": "zone", "operator": "In", "values": ["z1"]}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [rack]}, {"matchExpressions": [zone]}]
            }
        }
    }
    job = tj(2, template={"spec": {"affinity": affinity}})
    terms = required_expressions(build_worker_pod(job, 0, 0, RenderSettings()))
    assert len(terms) == 2  # still either rack or zone...
    for term, theirs in zip(terms, (rack, zone), strict=True):
        assert theirs in term  # ...and in each, a healthy node
        assert any(e["key"] == HEALTH_LABEL and e["operator"] == "NotIn" for e in term)


def test_admission_sees_the_gpus_of_usable_nodes_only():
    nodes = [node_info(node("PASS")), node_info(node("EVICT")), node_info(node())]
    assert healthy_capacity(nodes) == {"nvidia.com/gpu": 16}
    cpu_only = node("PASS")
    del cpu_only["status"]["allocatable"]["nvidia.com/gpu"]
    assert healthy_capacity([node_info(cpu_only)]) == {}  # no GPU nodes in view: no cap


def named(name: str, health: str | None = "PASS", passed: int | None = None, pool="vela"):
    body = node(health)
    body["metadata"]["name"] = name
    body["metadata"]["labels"]["carina.dev/pool"] = pool
    if passed is not None:
        body["metadata"]["labels"][FULL_PASS_LABEL] = str(passed)
    return node_info(body)


def test_a_preflight_gang_waits_for_enough_recently_checked_nodes_and_asks_for_the_rest():
    nodes = [
        named("a", passed=1000),  # recent
        named("b", passed=100),  # too old
        named("c"),  # never checked fully
        named("d", health="WARN", passed=1000),  # degraded: not usable at all
        named("e", passed=1000, pool="blue-vela"),  # another pool
    ]
    view = preflight(nodes, {"carina.dev/pool": "vela"}, needed=3, after=500)
    assert not view.clear
    assert view.ready == ("a",)
    assert view.to_check == ("c", "b")  # never checked first, then the oldest pass
    assert "3 node(s)" in view.message(500)
    assert preflight(nodes, {"carina.dev/pool": "vela"}, needed=1, after=500).clear
