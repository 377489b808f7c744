"""The agent's round against a Node in memory: what it writes, and when the invasive checks run.

The GPU checks read captured nvidia-smi output, the probes answer with their JSON line; disk
and memory are pinned to PASS so the machine running the tests cannot change the verdict. The
integration test (tests/integration/test_health_agent.py) runs the same round against the real
API server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from health_fakes import FakeCommands, FakeNodeApi, fixture, gpu_pod, make_node

from carina.operators.health import metrics
from carina.operators.health.agent import Agent, AgentConfig
from carina.operators.health.checks import Check, Finding, Kind, Outcome, RuleCheck
from carina.operators.health.gpu import light_checks
from carina.operators.health.host import generic_checks
from carina.operators.health.node import (
    HEARTBEAT_SECONDS,
    clock_skew,
    condition_patch,
    label_patch,
    node_view,
    timestamp,
)
from carina.operators.health.probes import invasive_checks
from carina.operators.health.verdict import decide
from carina.platform.api.health import (
    CHECK_REQUESTED_ANNOTATION,
    CONDITION_TYPE,
    FULL_PASS_LABEL,
    HEALTH_CHECK_LABEL,
    HEALTH_LABEL,
    Health,
)

NOW = 1_750_000_000.0
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def checks() -> list[Check]:
    """Every check, with disk and memory pinned to PASS."""
    pinned = {"disk", "memory"}
    generic = [
        RuleCheck(c.name, c.kind, lambda _: Finding(Outcome.PASS, "pinned"))
        if c.name in pinned
        else c
        for c in generic_checks()
    ]
    return [*generic, *light_checks(), *invasive_checks()]


def probe(name: str, **values: float) -> str:
    return json.dumps({"probe": name, "supported": True, "values": values})


def a100_node_commands(bandwidth: float = 1700.0) -> FakeCommands:
    """A healthy A100 node: nvidia-smi, both probes and dcgmi answer."""
    commands = FakeCommands().gpus("a100-query-gpu.csv", "a100-remapped-rows.csv")
    commands.answer("python3 bandwidth", probe("bandwidth", min_gbps=bandwidth))
    commands.answer("python3 allreduce", probe("allreduce", busbw_gbps=225.0))
    commands.answer("dcgmi", fixture("dcgmi-diag-r1-pass.txt"))
    return commands


def agent(api: FakeNodeApi, commands: FakeCommands, clock: Clock, **config: object) -> Agent:
    cfg = AgentConfig(node="vela-0", python="python3", **config)
    return Agent(cfg, api, checks(), runner=commands, clock=clock)


def labels(api: FakeNodeApi) -> dict[str, str]:
    assert api.node is not None
    return api.node["metadata"]["labels"]


def ran_probes(commands: FakeCommands) -> bool:
    return any(call[0] == "python3" for call in commands.calls)


# -- the verdict on the Node -----------------------------------------------------------------


def test_a_healthy_node_is_labelled_pass_and_its_condition_is_true() -> None:
    api = FakeNodeApi(make_node(labels={"nvidia.com/gpu.count": "8"}))
    report = agent(api, a100_node_commands(), Clock()).round()
    assert report.verdict.health is Health.PASS
    assert labels(api)[HEALTH_LABEL] == "PASS"
    assert labels(api)[HEALTH_CHECK_LABEL] == ""
    condition = api.condition(CONDITION_TYPE)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "ChecksPassed")
    assert api.condition("Ready") is not None  # the kubelet's condition is left alone


def test_a_fault_drill_evicts_the_node_naming_the_check_and_clearing_it_passes_again(
    tmp_path: Path,
) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"gpu-ecc": {"result": "EVICT", "message": "drill: ECC"}}))
    api = FakeNodeApi(make_node())
    clock = Clock()
    a = agent(api, a100_node_commands(), clock, fault_file=faults)
    a.round()
    assert (labels(api)[HEALTH_LABEL], labels(api)[HEALTH_CHECK_LABEL]) == ("EVICT", "gpu-ecc")
    condition = api.condition(CONDITION_TYPE)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "ChecksEvict")
    assert "gpu-ecc EVICT: drill: ECC" in condition["message"]

    faults.unlink()
    clock.now += 60
    a.round()
    assert labels(api)[HEALTH_LABEL] == "PASS"
    assert api.condition(CONDITION_TYPE)["status"] == "True"


def test_a_second_round_with_the_same_verdict_writes_nothing_until_the_heartbeat() -> None:
    api = FakeNodeApi(make_node())
    clock = Clock()
    a = agent(api, a100_node_commands(), clock)
    a.round()
    writes = len(api.writes)
    clock.now += 60
    a.round()
    assert len(api.writes) == writes
    clock.now += HEARTBEAT_SECONDS
    a.round()
    assert [kind for kind, _ in api.writes[writes:]] == ["status"]


def test_a_bad_fault_file_warns_and_names_the_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text("{not json")
    api = FakeNodeApi(make_node())
    report = agent(api, a100_node_commands(), Clock(), fault_file=faults).round()
    assert (report.verdict.health, report.verdict.check) == (Health.WARN, "fault-file")
    assert str(faults) in report.verdict.message


def test_a_node_that_cannot_be_read_is_reported_and_not_written() -> None:
    api = FakeNodeApi(node=None)
    commands = a100_node_commands()
    report = agent(api, commands, Clock()).round()
    assert report.write_error is not None
    assert "404" in report.write_error
    assert report.verdict.health is Health.WARN  # api-server WARN, clock-skew cannot run
    assert not ran_probes(commands)  # whether the node is idle is unknown


# -- invasive checks: idle node, schedule, full-pass stamp -----------------------------------


def test_a_passing_full_run_on_an_idle_node_stamps_the_node() -> None:
    api = FakeNodeApi(make_node())
    commands = a100_node_commands()
    report = agent(api, commands, Clock()).round()
    assert report.full_run == "never run"
    assert ran_probes(commands)
    assert labels(api)[FULL_PASS_LABEL] == str(int(NOW))


def test_invasive_checks_wait_while_a_pod_holds_the_gpus() -> None:
    api = FakeNodeApi(make_node(), pods=[gpu_pod("trainer-worker-0")])
    commands = a100_node_commands()
    report = agent(api, commands, Clock()).round()
    assert report.full_run is None
    assert report.gpu_pods == ("team-a/trainer-worker-0",)
    assert not ran_probes(commands)
    assert FULL_PASS_LABEL not in labels(api)


def test_a_slow_probe_keeps_the_node_warn_until_the_next_full_run() -> None:
    api = FakeNodeApi(make_node())
    clock = Clock()
    commands = a100_node_commands(bandwidth=1000.0)  # below 80% of A100's 1500 GB/s
    a = agent(api, commands, clock)
    first = a.round()
    assert (first.verdict.health, first.verdict.check) == (Health.WARN, "gpu-bandwidth")
    assert FULL_PASS_LABEL not in labels(api)  # not a passing full run
    clock.now += 60
    calls = len(commands.calls)
    second = a.round()
    assert second.full_run is None
    assert not [call for call in commands.calls[calls:] if call[0] == "python3"]
    assert second.verdict.check == "gpu-bandwidth"


def test_the_full_interval_and_a_request_bring_the_next_full_run() -> None:
    node = make_node(labels={FULL_PASS_LABEL: str(int(NOW - HOUR))})
    api = FakeNodeApi(node)
    clock = Clock()
    a = agent(api, a100_node_commands(), clock, full_interval=6 * HOUR)
    assert a.round().full_run is None  # the stamp says an hour ago
    assert api.node is not None
    api.node["metadata"]["annotations"][CHECK_REQUESTED_ANNOTATION] = timestamp(clock.now)
    clock.now += 60
    assert a.round().full_run == "requested"
    clock.now += 60
    assert a.round().full_run is None  # the request is answered
    clock.now += 6 * HOUR
    assert a.round().full_run == "interval"


# -- node patches (pure) ---------------------------------------------------------------------


def test_labels_are_patched_only_where_they_differ() -> None:
    view = node_view(make_node(labels={HEALTH_LABEL: "PASS", HEALTH_CHECK_LABEL: ""}))
    verdict = decide([])  # nothing ran: WARN
    assert label_patch(view, verdict, None) == {
        "metadata": {"labels": {HEALTH_LABEL: "WARN", HEALTH_CHECK_LABEL: "no-checks"}}
    }
    same = node_view(make_node(labels={HEALTH_LABEL: "WARN", HEALTH_CHECK_LABEL: "no-checks"}))
    assert label_patch(same, verdict, None) is None
    assert label_patch(same, verdict, 1234) == {"metadata": {"labels": {FULL_PASS_LABEL: "1234"}}}


def test_the_transition_time_moves_only_when_the_status_does() -> None:
    node = make_node()
    warn = decide([])
    first = condition_patch(node_view(node), warn, NOW)
    assert first is not None
    node["status"]["conditions"].append(first["status"]["conditions"][0])
    later = condition_patch(node_view(node), warn, NOW + HEARTBEAT_SECONDS + 1)
    assert later is not None
    [condition] = later["status"]["conditions"]
    assert condition["lastTransitionTime"] == timestamp(NOW)
    assert condition["lastHeartbeatTime"] == timestamp(NOW + HEARTBEAT_SECONDS + 1)


@pytest.mark.parametrize(
    ("sent", "date", "skew"),
    [
        (NOW, "Sun, 15 Jun 2025 15:06:40 GMT", -0.5),  # the Date header is NOW, floored
        (NOW + 10, "Sun, 15 Jun 2025 15:06:40 GMT", 9.5),
        (NOW, None, None),
        (NOW, "yesterday", None),
    ],
)
def test_the_clock_skew_comes_from_the_date_header(
    sent: float, date: str | None, skew: float | None
) -> None:
    assert clock_skew(sent, sent, date) == skew


def test_probe_checks_are_invasive_and_the_rest_light() -> None:
    kinds = {c.name: c.kind for c in checks()}
    assert {n for n, k in kinds.items() if k is Kind.INVASIVE} == {
        "gpu-bandwidth",
        "gpu-allreduce",
        "dcgm-diag",
    }


# -- metrics ---------------------------------------------------------------------------------


def test_a_round_sets_one_hot_gauges_of_each_result_and_the_state(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"gpu-clocks": {"result": "WARN"}}))
    agent(FakeNodeApi(make_node()), a100_node_commands(), Clock(), fault_file=faults).round()

    def value(name: str, **labels: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, {"node": "vela-0", **labels})

    assert value(metrics.CHECK_RESULT, check="gpu-clocks", result="WARN") == 1.0
    assert value(metrics.CHECK_RESULT, check="gpu-clocks", result="PASS") == 0.0
    assert value(metrics.STATE, state="WARN") == 1.0
    assert value(metrics.STATE, state="PASS") == 0.0
    seconds = metrics.REGISTRY.get_sample_value(metrics.CHECK_SECONDS, {"check": "gpu-ecc"})
    assert seconds is not None


def test_every_listed_metric_is_registered_and_nothing_else() -> None:
    registered = {f.name for f in metrics.REGISTRY.collect()}
    assert registered == set(metrics.ALL)


def test_a_check_that_is_gone_loses_its_series(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"xid-79": {"result": "EVICT", "message": "drill"}}))
    a = agent(FakeNodeApi(make_node()), a100_node_commands(), Clock(), fault_file=faults)
    a.round()
    labels = {"node": "vela-0", "check": "xid-79", "result": "EVICT"}
    assert metrics.REGISTRY.get_sample_value(metrics.CHECK_RESULT, labels) == 1.0
    faults.unlink()
    a.round()
    assert metrics.REGISTRY.get_sample_value(metrics.CHECK_RESULT, labels) is None
