"""The light GPU checks: nvidia-smi's CSV parsed, and each rule's verdict on captured output.

The fixtures under tests/data/health/ are `--format=csv,noheader,nounits` answers of eight-GPU
nodes: a healthy A100 node (Vela) and an H100 node (Blue Vela) where GPU 3 has uncorrectable
ECC errors and a row remap pending, GPU 5 is thermally slowed down, GPU 6's link runs at x8
and GPU 7 idles (P8) with its link trained down to gen 1.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from health_fakes import FakeCommands, context, fixture

from carina.operators.health.checks import CommandOutput, Outcome
from carina.operators.health.gpu import (
    clocks_finding,
    count_finding,
    ecc_finding,
    light_checks,
    pcie_finding,
    remap_finding,
)
from carina.operators.health.smi import (
    GpuReading,
    SmiParseError,
    parse_gpus,
    read_gpus,
    reading_from,
    with_remapped_rows,
)


def reading(query: str, remap: str) -> GpuReading:
    return reading_from(
        CommandOutput(True, 0, fixture(query)), CommandOutput(True, 0, fixture(remap))
    )


@pytest.fixture
def a100() -> GpuReading:
    return reading("a100-query-gpu.csv", "a100-remapped-rows.csv")


@pytest.fixture
def h100() -> GpuReading:
    return reading("h100-query-gpu-degraded.csv", "h100-remapped-rows-degraded.csv")


# -- parsing ---------------------------------------------------------------------------------


def test_every_gpu_of_an_a100_node_is_parsed_with_its_fields(a100: GpuReading) -> None:
    assert [g.index for g in a100.gpus] == list(range(8))
    first = a100.gpus[0]
    assert (first.bus_id, first.name, first.pstate) == (
        "00000000:07:00.0",
        "NVIDIA A100-SXM4-80GB",
        "P0",
    )
    assert (first.pcie_gen, first.pcie_gen_max, first.pcie_width, first.pcie_width_max) == (
        4,
        4,
        16,
        16,
    )
    assert first.slowdowns == ()
    assert (first.remap_pending, first.remap_failure) == (False, False)
    assert a100.product == "NVIDIA A100-SXM4-80GB"


def test_active_slowdowns_and_remaps_are_read_per_gpu(h100: GpuReading) -> None:
    gpus = {g.index: g for g in h100.gpus}
    assert gpus[5].slowdowns == ("hw-thermal",)
    assert gpus[3].ecc_uncorrected == 2
    assert gpus[3].remap_pending is True
    assert gpus[3].remapped_uncorrectable == 1


def test_not_supported_fields_read_as_unknown() -> None:
    text = (
        "0, 00000000:01:00.0, Tesla V100, P0, Not Active, Not Active, Not Active,"
        " [Not Supported], 1530, 1530, [N/A], [N/A], 3, 3, 16, 16\n"
    )
    [gpu] = parse_gpus(text)
    assert gpu.ecc_uncorrected is None
    assert gpu.slowdowns == ()


def test_remapped_rows_match_bus_ids_written_with_a_short_domain() -> None:
    [gpu] = parse_gpus(fixture("a100-query-gpu.csv").splitlines()[0])
    [merged] = with_remapped_rows([gpu], "0000:07:00.0, 0, 0, Yes, No\n")
    assert merged.remap_pending is True
    assert merged.remap_failure is False


def test_output_that_is_not_the_asked_csv_is_refused() -> None:
    with pytest.raises(SmiParseError):
        parse_gpus("Field 'clocks_throttle_reasons.hw_slowdown' is not a valid field to query.")


# -- the reading -----------------------------------------------------------------------------


def test_a_node_without_nvidia_smi_has_no_gpu_tooling() -> None:
    r = reading_from(CommandOutput(found=False), None)
    assert r.absent
    assert "nvidia-smi not found" in r.absent


def test_nvidia_smi_that_cannot_reach_the_driver_is_a_failure() -> None:
    broken = CommandOutput(
        True,
        9,
        "",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    )
    r = reading_from(broken, None)
    assert r.failure
    assert "couldn't communicate" in r.failure
    assert count_finding(r, expected=8).outcome == Outcome.EVICT


def test_nvidia_smi_runs_once_per_query_per_round() -> None:
    commands = FakeCommands().gpus("a100-query-gpu.csv", "a100-remapped-rows.csv")
    ctx = context(commands)
    for check in light_checks():
        check.run(ctx)
    assert read_gpus(ctx) is read_gpus(ctx)
    assert len(commands.calls) == 2


# -- rules -----------------------------------------------------------------------------------


def test_a_healthy_a100_node_passes_every_light_gpu_check() -> None:
    ctx = context(
        FakeCommands().gpus("a100-query-gpu.csv", "a100-remapped-rows.csv"),
        labels={"nvidia.com/gpu.count": "8"},
    )
    results = {c.name: c.run(ctx) for c in light_checks()}
    assert {name: r.outcome for name, r in results.items()} == {
        "gpu-count": Outcome.PASS,
        "gpu-ecc": Outcome.PASS,
        "gpu-row-remap": Outcome.PASS,
        "gpu-clocks": Outcome.PASS,
        "gpu-pcie": Outcome.PASS,
    }
    assert results["gpu-count"].values == {"gpus": 8.0, "expected": 8.0}


def test_a_missing_gpu_evicts_the_node(a100: GpuReading) -> None:
    seven = GpuReading(a100.gpus[:7])
    finding = count_finding(seven, expected=8)
    assert finding.outcome == Outcome.EVICT
    assert finding.message == "7 of 8 GPUs visible"


def test_without_a_count_label_the_visible_gpus_pass(a100: GpuReading) -> None:
    assert count_finding(a100, expected=None).outcome == Outcome.PASS


def test_uncorrectable_ecc_errors_evict(h100: GpuReading) -> None:
    finding = ecc_finding(h100)
    assert finding.outcome == Outcome.EVICT
    assert "GPU 3: 2" in finding.message


def test_correctable_ecc_errors_warn_only_above_the_threshold(a100: GpuReading) -> None:
    # GPU 2 has 3 correctable errors: below the default threshold, above a strict one.
    assert ecc_finding(a100).outcome == Outcome.PASS
    warned = ecc_finding(a100, corrected_warn=2)
    assert warned.outcome == Outcome.WARN
    assert "GPU 2: 3" in warned.message


def test_a_pending_row_remap_evicts(h100: GpuReading) -> None:
    finding = remap_finding(h100)
    assert finding.outcome == Outcome.EVICT
    assert "pending" in finding.message
    assert "GPU 3" in finding.message


def test_a_failed_row_remap_evicts(a100: GpuReading) -> None:
    gpus = list(a100.gpus)
    gpus[4] = replace(gpus[4], remap_failure=True)
    finding = remap_finding(GpuReading(tuple(gpus)))
    assert finding.outcome == Outcome.EVICT
    assert "failed on GPU 4" in finding.message


def test_a_thermal_slowdown_warns(h100: GpuReading) -> None:
    finding = clocks_finding(h100)
    assert finding.outcome == Outcome.WARN
    assert "GPU 5: hw-thermal" in finding.message
    assert finding.values["min_sm_clock_mhz"] == 345


def test_a_narrow_link_warns_but_an_idle_link_trained_down_does_not(h100: GpuReading) -> None:
    finding = pcie_finding(h100)
    assert finding.outcome == Outcome.WARN
    assert "GPU 6: x8 of x16" in finding.message
    assert "GPU 7" not in finding.message  # P8: gen 1 of 5 is power saving, not a fault


def test_every_gpu_check_is_unsupported_without_gpu_tooling() -> None:
    ctx = context(FakeCommands())  # nothing installed
    for check in light_checks():
        result = check.run(ctx)
        assert result.outcome == Outcome.UNSUPPORTED, check.name
        assert "nvidia-smi not found" in result.message


def test_a_failing_remap_query_leaves_only_the_remap_check_unsupported() -> None:
    commands = FakeCommands().answer("nvidia-smi --query-gpu", fixture("a100-query-gpu.csv"))
    commands.answer("nvidia-smi --query-remapped-rows", returncode=2, stderr="Invalid combination")
    ctx = context(commands)
    results = {c.name: c.run(ctx).outcome for c in light_checks()}
    assert results["gpu-row-remap"] == Outcome.UNSUPPORTED
    assert results["gpu-ecc"] == Outcome.PASS
