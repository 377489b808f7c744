"""The invasive checks: they load the GPUs, so they run only on an idle node.

- gpu-bandwidth: HBM copy bandwidth of each GPU (`python -m carina.workloads.health_probe
  bandwidth`, a subprocess: the agent itself needs no torch).
- gpu-allreduce: NCCL all-reduce bus bandwidth between the node's GPUs (same module,
  `allreduce`); a wrong sum is EVICT.
- dcgm-diag: NVIDIA DCGM's quick diagnostic, `dcgmi diag -r 1`, where dcgmi is installed and
  its host engine runs.

A probe measured below `WARN_FRACTION` of its GPU product's reference -> WARN; a probe that
errs (a CUDA or NCCL error) or hangs -> EVICT. References are what healthy nodes of each
product measure with these probes (below the data-sheet peaks: a copy reaches about 80-90% of
peak HBM bandwidth, NVLink all-reduce about 75-80%): A100-80GB about 1.5 TB/s and 230 GB/s
over NVLink 3, H100 SXM about 3 TB/s and 450 GB/s over NVLink 4. A product without a reference
is measured and reported, never judged (PASS, saying so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from carina.operators.health.checks import (
    Check,
    CommandOutput,
    Context,
    Finding,
    Kind,
    Outcome,
    RuleCheck,
    unsupported,
)
from carina.operators.health.smi import read_gpus

PROBE_MODULE = "carina.workloads.health_probe"
PROBE_TIMEOUT_S = 300.0
DCGM_TIMEOUT_S = 600.0
WARN_FRACTION = 0.8
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class Reference:
    """What a healthy GPU of one product measures with the probes, in GB/s."""

    hbm_gbps: float
    allreduce_busbw_gbps: float


# Matched against nvidia-smi's name or the node's product label, in this order.
REFERENCES: dict[str, Reference] = {
    "H200": Reference(hbm_gbps=4000, allreduce_busbw_gbps=450),
    "H100": Reference(hbm_gbps=3000, allreduce_busbw_gbps=450),
    "A100": Reference(hbm_gbps=1500, allreduce_busbw_gbps=230),
}


def reference_for(product: str | None) -> tuple[str, Reference] | None:
    """The reference of a GPU product name ("NVIDIA A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3")."""
    name = (product or "").upper()
    for key, reference in REFERENCES.items():
        if key in name:
            return key, reference
    return None


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The probe's JSON line (the last line that is a JSON object), None if there is none."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                return None
            return report if isinstance(report, dict) else None
    return None


def probe_finding(
    output: CommandOutput, metric: str, expected: float | None, product: str | None
) -> Finding:
    """Judge one probe run: `metric` of its values against `expected` GB/s."""
    if output.timed_out:
        return Finding(Outcome.EVICT, f"probe did not finish in {PROBE_TIMEOUT_S:.0f} s")
    report = parse_report(output.stdout)
    if report is None:
        return Finding(Outcome.WARN, f"probe printed no report ({output.trouble()})")
    if not report.get("supported"):
        return unsupported(str(report.get("reason") or "probe unsupported here"))
    if report.get("error"):
        return Finding(Outcome.EVICT, f"probe failed: {report['error']}")
    values: Mapping[str, float] = {
        k: float(v) for k, v in (report.get("values") or {}).items() if isinstance(v, int | float)
    }
    measured = values.get(metric)
    if measured is None:
        return Finding(Outcome.WARN, f"probe reported no {metric}")
    name = report.get("product") or product or "unknown GPU"
    if expected is None:
        return Finding(Outcome.PASS, f"{measured:.0f} GB/s (no reference for {name})", values)
    words = f"{measured:.0f} GB/s, reference {expected:.0f} GB/s for {name}"
    if measured < WARN_FRACTION * expected:
        return Finding(Outcome.WARN, f"below {WARN_FRACTION:.0%} of reference: {words}", values)
    return Finding(Outcome.PASS, words, values)


def _product(ctx: Context) -> str | None:
    return read_gpus(ctx).product or ctx.labels.get(GPU_PRODUCT_LABEL)


def _run_probe(ctx: Context, probe: str, metric: str) -> Finding:
    reading = read_gpus(ctx)
    if reading.absent:
        # No GPU tooling: do not start torch just to hear that there is no GPU.
        return unsupported(reading.absent)
    product = _product(ctx)
    ref = reference_for(product)
    expected = None
    if ref is not None:
        expected = ref[1].hbm_gbps if probe == "bandwidth" else ref[1].allreduce_busbw_gbps
    output = ctx.run([ctx.python, "-m", PROBE_MODULE, probe], PROBE_TIMEOUT_S)
    return probe_finding(output, metric, expected, product)


# -- DCGM ------------------------------------------------------------------------------------

_RESULTS = ("pass", "fail", "warn", "skip")


def parse_dcgm_diag(text: str) -> list[tuple[str, str, str]]:
    """(test, result, detail) rows of `dcgmi diag` text output; result is pass/fail/warn/skip.

    Rows look like `| Memory | Fail - GPU: 3 |`; a following `| Warning | ... |` or
    `| Info | ... |` row (wrapped onto rows with an empty first cell) is the detail of the test
    above it. Metadata rows are left out.
    """
    rows: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0].startswith(("-", "=")):
            continue
        name, value = cells
        if not name:  # a long detail wraps onto rows with an empty first cell
            if rows and value:
                test, result, detail = rows[-1]
                rows[-1] = (test, result, f"{detail} {value}")
            continue
        first = value.split(" ", 1)[0].lower()
        if first in _RESULTS:
            rows.append((name, first, value))
        elif name in {"Warning", "Info"} and rows:
            test, result, detail = rows[-1]
            rows[-1] = (test, result, f"{detail}: {value}")
    return rows


def dcgm_finding(output: CommandOutput) -> Finding:
    """Judge `dcgmi diag -r 1`: a failed test -> EVICT, a warning -> WARN."""
    if not output.found:
        return unsupported("dcgmi not installed")
    if output.timed_out:
        return Finding(Outcome.EVICT, f"dcgmi diag did not finish in {DCGM_TIMEOUT_S:.0f} s")
    rows = parse_dcgm_diag(output.stdout)
    if not rows:
        text = (output.stdout + output.stderr).lower()
        if "host engine" in text or "connect" in text:
            return unsupported(f"dcgmi cannot reach its host engine ({output.trouble()})")
        return Finding(Outcome.WARN, f"dcgmi diag gave no results ({output.trouble()})")
    failed = [f"{name} ({detail})" for name, result, detail in rows if result == "fail"]
    warned = [f"{name} ({detail})" for name, result, detail in rows if result == "warn"]
    values = {"tests": float(len(rows)), "failed": float(len(failed))}
    if failed:
        return Finding(Outcome.EVICT, "DCGM diagnostic failed: " + "; ".join(failed), values)
    if warned:
        return Finding(Outcome.WARN, "DCGM diagnostic warned: " + "; ".join(warned), values)
    return Finding(Outcome.PASS, f"DCGM diagnostic passed {len(rows)} tests", values)


def invasive_checks() -> list[Check]:
    """The invasive checks, in the order the verdict names them."""
    return [
        RuleCheck(
            "gpu-bandwidth", Kind.INVASIVE, lambda ctx: _run_probe(ctx, "bandwidth", "min_gbps")
        ),
        RuleCheck(
            "gpu-allreduce", Kind.INVASIVE, lambda ctx: _run_probe(ctx, "allreduce", "busbw_gbps")
        ),
        RuleCheck(
            "dcgm-diag",
            Kind.INVASIVE,
            lambda ctx: dcgm_finding(ctx.run(["dcgmi", "diag", "-r", "1"], DCGM_TIMEOUT_S)),
        ),
    ]
