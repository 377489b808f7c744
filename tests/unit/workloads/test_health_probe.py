"""The GPU probes' arithmetic: what a measured time turns into (nccl-tests' conventions)."""

from __future__ import annotations

import pytest

from carina.workloads.health_probe import bus_bandwidth_gbps, copy_bandwidth_gbps, main


def test_a_copy_counts_every_byte_twice_read_and_written() -> None:
    # 1 GB copied 10 times in 10 ms: 20 GB moved in 0.01 s.
    assert copy_bandwidth_gbps(10**9, 0.01, 10) == pytest.approx(2000.0)


def test_all_reduce_bus_bandwidth_scales_algbw_by_two_n_minus_one_over_n() -> None:
    # 1 GB in 10 ms is 100 GB/s algorithm bandwidth; 8 GPUs move 2*7/8 of it per link.
    assert bus_bandwidth_gbps(10**9, 0.01, 8) == pytest.approx(175.0)
    assert bus_bandwidth_gbps(10**9, 0.01, 2) == pytest.approx(100.0)


def test_an_unknown_probe_is_refused_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memtest"]) == 2
    assert "bandwidth|allreduce" in capsys.readouterr().err
