"""The generic checks (disk, memory, clock, API server) and the invasive ones (GPU probes, DCGM).

Each rule is fed what the real source gives (statvfs numbers, /proc/meminfo text, the probe's
JSON line, dcgmi's table) and must come to the verdict a person would.
"""

from __future__ import annotations

import json

import pytest
from health_fakes import FakeCommands, context, fixture

from carina.operators.health.checks import ApiReading, CommandOutput, Outcome
from carina.operators.health.host import (
    api_finding,
    disk_finding,
    disks_finding,
    generic_checks,
    memory_finding,
    parse_meminfo,
    skew_finding,
)
from carina.operators.health.probes import (
    dcgm_finding,
    invasive_checks,
    parse_dcgm_diag,
    probe_finding,
    reference_for,
)

GiB = 2**30
MEMINFO = """MemTotal:       2113534604 kB
MemFree:        1432208940 kB
MemAvailable:   1985432112 kB
Buffers:         1043320 kB
HugePages_Total:       0
"""

# -- disk --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free_fraction", "outcome"),
    [(0.5, Outcome.PASS), (0.10, Outcome.PASS), (0.09, Outcome.WARN), (0.019, Outcome.EVICT)],
)
def test_disk_free_space_warns_under_ten_percent_and_evicts_under_two(
    free_fraction: float, outcome: Outcome
) -> None:
    total = 1000 * GiB
    assert disk_finding("/", int(total * free_fraction), total).outcome == outcome


def test_the_fullest_disk_decides_and_every_path_is_named() -> None:
    finding = disks_finding(
        [disk_finding("/", 500 * GiB, 1000 * GiB), disk_finding("/scratch", 50 * GiB, 1000 * GiB)]
    )
    assert finding.outcome == Outcome.WARN
    assert "/: 50.0% free" in finding.message
    assert "/scratch: 5.0% free" in finding.message
    assert finding.values["min_free_fraction"] == pytest.approx(0.05)


def test_a_path_that_does_not_exist_does_not_hide_the_others() -> None:
    check = generic_checks(("/", "/no/such/path"))[0]
    result = check.run(context())
    assert result.outcome != Outcome.UNSUPPORTED  # / ran
    assert "/no/such/path" in result.message


# -- memory ------------------------------------------------------------------------------------


def test_meminfo_is_read_in_bytes() -> None:
    info = parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 2113534604 * 1024
    assert info["HugePages_Total"] == 0


def test_memory_warns_when_little_is_available() -> None:
    assert memory_finding(parse_meminfo(MEMINFO)).outcome == Outcome.PASS
    tight = {"MemTotal": 100 * GiB, "MemAvailable": 4 * GiB}
    assert memory_finding(tight).outcome == Outcome.WARN


def test_memory_without_meminfo_fields_is_unsupported() -> None:
    assert memory_finding({}).outcome == Outcome.UNSUPPORTED


# -- clock and API server ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew", "outcome"), [(0.4, Outcome.PASS), (-1.9, Outcome.PASS), (2.6, Outcome.WARN)]
)
def test_a_clock_more_than_two_seconds_off_warns(skew: float, outcome: Outcome) -> None:
    assert skew_finding(ApiReading(None, 0.01, skew)).outcome == outcome


def test_clocks_cannot_be_compared_without_the_api_server() -> None:
    finding = skew_finding(ApiReading(error="connection refused"))
    assert finding.outcome == Outcome.UNSUPPORTED
    assert "connection refused" in finding.message


def test_an_unreachable_api_server_warns() -> None:
    assert api_finding(ApiReading(error="connection refused")).outcome == Outcome.WARN
    assert api_finding(ApiReading(None, 0.02, 0.0)).outcome == Outcome.PASS


# -- GPU probes ------------------------------------------------------------------------------


def probe_output(**report: object) -> CommandOutput:
    return CommandOutput(True, 0, "some torch warning\n" + json.dumps(report) + "\n")


def test_products_find_their_reference_by_either_spelling() -> None:
    a100 = reference_for("NVIDIA A100-SXM4-80GB")
    h100 = reference_for("NVIDIA-H100-80GB-HBM3")
    assert a100 is not None
    assert a100[0] == "A100"
    assert h100 is not None
    assert h100[1].hbm_gbps == 3000
    assert reference_for("Tesla T4") is None


def test_bandwidth_below_eighty_percent_of_the_reference_warns() -> None:
    slow = probe_output(
        probe="bandwidth",
        supported=True,
        product="NVIDIA H100 80GB HBM3",
        values={"min_gbps": 2100.0, "gpu0_gbps": 2100.0},
    )
    finding = probe_finding(slow, "min_gbps", 3000.0, None)
    assert finding.outcome == Outcome.WARN
    assert "2100 GB/s" in finding.message
    assert "3000 GB/s" in finding.message
    fast = probe_output(probe="bandwidth", supported=True, values={"min_gbps": 2900.0})
    assert probe_finding(fast, "min_gbps", 3000.0, "H100").outcome == Outcome.PASS


def test_a_probe_without_cuda_is_unsupported_with_its_reason() -> None:
    out = probe_output(probe="allreduce", supported=False, reason="CUDA is not available")
    finding = probe_finding(out, "busbw_gbps", 230.0, None)
    assert finding.outcome == Outcome.UNSUPPORTED
    assert finding.message == "CUDA is not available"


def test_a_probe_that_errs_or_hangs_evicts() -> None:
    erred = probe_output(probe="allreduce", supported=True, error="RuntimeError: NCCL error")
    assert probe_finding(erred, "busbw_gbps", 230.0, None).outcome == Outcome.EVICT
    hung = CommandOutput(True, timed_out=True)
    assert probe_finding(hung, "busbw_gbps", 230.0, None).outcome == Outcome.EVICT


def test_a_product_without_a_reference_is_measured_not_judged() -> None:
    out = probe_output(probe="bandwidth", supported=True, values={"min_gbps": 300.0})
    finding = probe_finding(out, "min_gbps", None, "Tesla T4")
    assert finding.outcome == Outcome.PASS
    assert "no reference" in finding.message


def test_invasive_gpu_probes_start_no_process_on_a_node_without_gpu_tooling() -> None:
    commands = FakeCommands()
    ctx = context(commands)
    results = {c.name: c.run(ctx) for c in invasive_checks()}
    assert {r.outcome for r in results.values()} == {Outcome.UNSUPPORTED}
    assert not any(call[0] == "python3" for call in commands.calls)
    assert "dcgmi not installed" in results["dcgm-diag"].message


def test_the_bandwidth_probe_is_judged_against_the_nodes_product() -> None:
    commands = FakeCommands().gpus("a100-query-gpu.csv", "a100-remapped-rows.csv")
    report = {"probe": "bandwidth", "supported": True, "values": {"min_gbps": 1100.0}}
    commands.answer("python3 bandwidth", json.dumps(report))
    [bandwidth] = [c for c in invasive_checks() if c.name == "gpu-bandwidth"]
    result = bandwidth.run(context(commands))
    assert result.outcome == Outcome.WARN  # 1100 < 0.8 * 1500 (A100)
    assert ["python3", "-m", "carina.workloads.health_probe", "bandwidth"] in commands.calls


# -- DCGM ------------------------------------------------------------------------------------


def test_a_passing_dcgm_diagnostic_passes() -> None:
    finding = dcgm_finding(CommandOutput(True, 0, fixture("dcgmi-diag-r1-pass.txt")))
    assert finding.outcome == Outcome.PASS
    assert finding.values["tests"] == 9


def test_a_failed_dcgm_test_evicts_with_its_warning_text() -> None:
    text = fixture("dcgmi-diag-r1-fail.txt")
    rows = {name: result for name, result, _ in parse_dcgm_diag(text)}
    assert rows["Persistence Mode"] == "warn"
    assert rows["Page Retirement/Row Remap"] == "fail"
    finding = dcgm_finding(CommandOutput(True, 226, text))
    assert finding.outcome == Outcome.EVICT
    assert "row remapping is pending" in finding.message


def test_dcgmi_without_its_host_engine_is_unsupported() -> None:
    out = CommandOutput(
        True, 255, "Error: unable to establish a connection to the specified host: localhost\n"
    )
    assert dcgm_finding(out).outcome == Outcome.UNSUPPORTED
