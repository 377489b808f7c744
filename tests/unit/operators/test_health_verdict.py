"""From check results to the node's verdict, fault drills, the schedule of invasive checks."""

from __future__ import annotations

import pytest
from health_fakes import gpu_pod

from carina.operators.health.checks import CheckResult, Finding, Kind, Outcome
from carina.operators.health.faults import FaultFileError, apply_faults, parse_faults
from carina.operators.health.host import GENERIC
from carina.operators.health.schedule import full_run_due, gpu_pods, parse_time
from carina.operators.health.verdict import decide, label_value
from carina.platform.api.health import Health


def result(check: str, outcome: Outcome, message: str = "", kind: Kind = Kind.LIGHT):
    return CheckResult(check, kind, outcome, message or f"{check} says {outcome.value}")


def generic_passing() -> list[CheckResult]:
    return [result(name, Outcome.PASS) for name in GENERIC]


# -- verdict -----------------------------------------------------------------------------------


def test_the_worst_result_is_the_verdict_and_its_first_check_is_blamed() -> None:
    results = [
        *generic_passing(),
        result("gpu-clocks", Outcome.WARN),
        result("gpu-ecc", Outcome.EVICT, "uncorrectable ECC errors (GPU 3: 2)"),
        result("gpu-row-remap", Outcome.EVICT),
    ]
    verdict = decide(results, GENERIC)
    assert verdict.health is Health.EVICT
    assert verdict.check == "gpu-ecc"
    # Worst first in the message, then the warnings.
    assert verdict.message.index("gpu-ecc EVICT: uncorrectable") < verdict.message.index(
        "gpu-clocks WARN"
    )


def test_unsupported_checks_are_listed_apart_and_never_count_as_passed() -> None:
    results = [
        *generic_passing(),
        result("gpu-count", Outcome.UNSUPPORTED, "no GPU tooling on this node"),
        result("gpu-ecc", Outcome.UNSUPPORTED, "no GPU tooling on this node"),
        result("dcgm-diag", Outcome.UNSUPPORTED, "dcgmi not installed"),
    ]
    verdict = decide(results, GENERIC)
    assert verdict.health is Health.PASS
    assert verdict.check == ""
    assert verdict.message == (
        "4 checks passed; unsupported, not counted as passed:"
        " gpu-count, gpu-ecc (no GPU tooling on this node); dcgm-diag (dcgmi not installed)"
    )
    assert [r.check for r in verdict.unsupported] == ["gpu-count", "gpu-ecc", "dcgm-diag"]


def test_a_node_is_not_pass_when_a_generic_check_could_not_run() -> None:
    results = [
        result(name, Outcome.UNSUPPORTED if name == "memory" else Outcome.PASS) for name in GENERIC
    ]
    verdict = decide(results, GENERIC)
    assert verdict.health is Health.WARN
    assert verdict.check == "memory"
    assert "required checks did not run: memory" in verdict.message


def test_a_node_where_nothing_could_run_is_warn() -> None:
    verdict = decide([result("gpu-count", Outcome.UNSUPPORTED)], GENERIC)
    assert verdict.health is Health.WARN
    assert verdict.check == "disk"


def test_a_blamed_name_becomes_a_valid_label_value() -> None:
    assert label_value("xid 79: fell off the bus!") == "xid-79-fell-off-the-bus"
    assert len(label_value("a" * 100)) == 63


# -- fault drills ----------------------------------------------------------------------------


def test_a_fault_replaces_the_checks_result_and_names_it() -> None:
    faults = parse_faults('{"gpu-ecc": {"result": "EVICT", "message": "drill: ECC"}}')
    results = apply_faults([*generic_passing(), result("gpu-ecc", Outcome.PASS)], faults)
    verdict = decide(results, GENERIC)
    assert (verdict.health, verdict.check) == (Health.EVICT, "gpu-ecc")
    assert "drill: ECC" in verdict.message


def test_a_fault_for_a_check_that_did_not_run_adds_its_result_of_its_kind() -> None:
    faults = parse_faults('{"gpu-bandwidth": {"result": "warn"}}')
    [added] = apply_faults([], faults, {"gpu-bandwidth": Kind.INVASIVE})
    assert (added.check, added.kind, added.outcome) == (
        "gpu-bandwidth",
        Kind.INVASIVE,
        Outcome.WARN,
    )
    assert added.message == "fault drill: WARN"


def test_an_empty_fault_file_means_no_fault() -> None:
    assert parse_faults("") == {}
    assert parse_faults("{}") == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", "not JSON"),
        ("[]", "expected an object"),
        ('{"disk": "EVICT"}', "disk: expected"),
        ('{"disk": {"result": "BROKEN"}}', "disk.result: 'BROKEN' is not one of PASS, WARN"),
    ],
)
def test_a_bad_fault_file_is_refused_saying_where(text: str, words: str) -> None:
    with pytest.raises(FaultFileError) as info:
        parse_faults(text, "faults.json")
    assert words in str(info.value)
    assert str(info.value).startswith("faults.json")


def test_a_fault_can_mark_a_check_unsupported() -> None:
    faults = {"disk": Finding(Outcome.UNSUPPORTED, "drill")}
    verdict = decide(apply_faults(generic_passing(), faults), GENERIC)
    assert verdict.health is Health.WARN  # a generic check that did not run


# -- schedule: idle node, full run due --------------------------------------------------------


def test_only_unfinished_pods_that_ask_for_gpus_keep_a_node_busy() -> None:
    cpu_pod = {"metadata": {"name": "agent", "namespace": "carina"}, "spec": {"containers": [{}]}}
    pods = [
        gpu_pod("done", phase="Succeeded"),
        gpu_pod("failed", phase="Failed"),
        gpu_pod("zero", gpus="0"),
        cpu_pod,
    ]
    assert gpu_pods(pods) == []
    assert gpu_pods([*pods, gpu_pod("worker-0", phase="Pending")]) == ["team-a/worker-0"]


def test_requests_alone_also_hold_gpus() -> None:
    pod = gpu_pod("w")
    pod["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    assert gpu_pods([pod]) == ["team-a/w"]


def test_times_are_read_as_rfc3339_or_unix_seconds() -> None:
    assert parse_time("2025-01-01T00:00:00Z") == 1735689600.0
    assert parse_time("1735689600") == 1735689600.0
    assert parse_time("2025-01-01T00:00:00") is None  # no zone: ambiguous
    assert parse_time("soon") is None
    assert parse_time(None) is None


@pytest.mark.parametrize(
    ("last_full", "requested", "interval", "due"),
    [
        (None, None, 3600, "never run"),
        (1000.0, None, 3600, None),
        (1000.0 - 3600, None, 3600, "interval"),
        (1000.0, 900.0, 3600, None),  # a request older than the last run is answered
        (500.0, 900.0, 3600, "requested"),
        (None, None, 0, None),  # 0: requests only
        (None, 900.0, 0, "requested"),
    ],
)
def test_a_full_run_is_due_on_first_start_on_interval_or_on_request(
    last_full: float | None, requested: float | None, interval: float, due: str | None
) -> None:
    assert full_run_due(1010.0, last_full, interval, requested) == due
