"""The light GPU checks: the round's nvidia-smi reading (`smi.py`) judged.

Rules:
- gpu-count: fewer GPUs than the node's `nvidia.com/gpu.count` label -> EVICT (a GPU fell off
  the bus); nvidia-smi installed but failing (driver gone) -> EVICT.
- gpu-clocks: an active hardware slowdown, hardware or software thermal slowdown or power
  brake -> WARN (power capping under load is normal and not counted).
- gpu-ecc: volatile uncorrectable ECC errors -> EVICT; correctable ones above
  `CORRECTED_ECC_WARN` -> WARN.
- gpu-row-remap: a pending remap or a remap failure -> EVICT.
- gpu-pcie: link width below its maximum -> WARN; link generation below its maximum -> WARN,
  but only in performance state P0: an idle GPU trains its link down to save power.
"""

from __future__ import annotations

from collections.abc import Sequence

from carina.operators.health.checks import Check, Finding, Kind, Outcome, RuleCheck, unsupported
from carina.operators.health.smi import Gpu, GpuReading, read_gpus

GPU_COUNT_LABEL = "nvidia.com/gpu.count"  # set by NVIDIA's GPU feature discovery

# Volatile correctable ECC errors since the driver loaded above which a GPU is WARN: a few are
# normal over a long uptime, a steady stream is a GPU on its way out.
CORRECTED_ECC_WARN = 100


def _no_gpus(reading: GpuReading) -> Finding | None:
    """UNSUPPORTED when there is nothing to judge (gpu-count speaks for a failing nvidia-smi)."""
    if reading.absent:
        return unsupported(reading.absent)
    if reading.failure:
        return unsupported(f"no GPU reading: {reading.failure}")
    if not reading.gpus:
        return unsupported("nvidia-smi lists no GPU")
    return None


def _which(gpus: Sequence[Gpu]) -> str:
    return ", ".join(str(g.index) for g in gpus)


# -- rules -------------------------------------------------------------------------------------


def count_finding(reading: GpuReading, expected: int | None) -> Finding:
    """gpu-count: every GPU the node should have is visible and answers."""
    if reading.absent:
        return unsupported(reading.absent)
    if reading.failure:
        return Finding(Outcome.EVICT, reading.failure)
    seen = len(reading.gpus)
    values = {"gpus": float(seen)}
    if expected is None:
        return Finding(Outcome.PASS, f"{seen} GPUs visible (no {GPU_COUNT_LABEL} label)", values)
    values["expected"] = float(expected)
    if seen < expected:
        return Finding(Outcome.EVICT, f"{seen} of {expected} GPUs visible", values)
    if seen > expected:
        return Finding(Outcome.WARN, f"{seen} GPUs visible, the node says {expected}", values)
    return Finding(Outcome.PASS, f"{seen} of {expected} GPUs visible", values)


def clocks_finding(reading: GpuReading) -> Finding:
    """gpu-clocks: no GPU held back by a hardware or thermal slowdown."""
    if (none := _no_gpus(reading)) is not None:
        return none
    slow = [g for g in reading.gpus if g.slowdowns]
    clocks = [g.sm_clock_mhz for g in reading.gpus if g.sm_clock_mhz is not None]
    values = {"throttled_gpus": float(len(slow))}
    if clocks:
        values["min_sm_clock_mhz"] = min(clocks)
    if slow:
        words = "; ".join(f"GPU {g.index}: {', '.join(g.slowdowns)}" for g in slow)
        return Finding(Outcome.WARN, f"clocks slowed down ({words})", values)
    return Finding(Outcome.PASS, "no hardware or thermal slowdown", values)


def ecc_finding(reading: GpuReading, corrected_warn: int = CORRECTED_ECC_WARN) -> Finding:
    """gpu-ecc: no uncorrectable ECC error, few correctable ones (volatile counters)."""
    if (none := _no_gpus(reading)) is not None:
        return none
    counted = [g for g in reading.gpus if g.ecc_uncorrected is not None]
    if not counted:
        return unsupported("the GPUs report no ECC counters (ECC off?)")
    uncorrected = [g for g in counted if (g.ecc_uncorrected or 0) > 0]
    noisy = [g for g in counted if (g.ecc_corrected or 0) > corrected_warn]
    values = {
        "uncorrected": float(sum(g.ecc_uncorrected or 0 for g in counted)),
        "corrected": float(sum(g.ecc_corrected or 0 for g in counted)),
    }
    if uncorrected:
        words = ", ".join(f"GPU {g.index}: {g.ecc_uncorrected}" for g in uncorrected)
        return Finding(Outcome.EVICT, f"uncorrectable ECC errors ({words})", values)
    if noisy:
        words = ", ".join(f"GPU {g.index}: {g.ecc_corrected}" for g in noisy)
        return Finding(
            Outcome.WARN, f"correctable ECC errors above {corrected_warn} ({words})", values
        )
    return Finding(Outcome.PASS, "no uncorrectable ECC errors", values)


def remap_finding(reading: GpuReading) -> Finding:
    """gpu-row-remap: no HBM row remap pending a reset, none failed."""
    if (none := _no_gpus(reading)) is not None:
        return none
    if reading.remap_trouble:
        return unsupported(reading.remap_trouble)
    known = [g for g in reading.gpus if g.remap_pending is not None or g.remap_failure]
    if not known:
        return unsupported("the GPUs report no row remapping (before Ampere?)")
    failed = [g for g in known if g.remap_failure]
    pending = [g for g in known if g.remap_pending]
    values = {"pending": float(len(pending)), "failed": float(len(failed))}
    if failed:
        return Finding(Outcome.EVICT, f"row remapping failed on GPU {_which(failed)}", values)
    if pending:
        return Finding(
            Outcome.EVICT, f"row remap pending a GPU reset on GPU {_which(pending)}", values
        )
    return Finding(Outcome.PASS, "no row remap pending or failed", values)


def pcie_finding(reading: GpuReading) -> Finding:
    """gpu-pcie: every link at its full width, and at its full generation when busy (P0)."""
    if (none := _no_gpus(reading)) is not None:
        return none
    problems = []
    for g in reading.gpus:
        if g.pcie_width is not None and g.pcie_width_max and g.pcie_width < g.pcie_width_max:
            problems.append(f"GPU {g.index}: x{g.pcie_width} of x{g.pcie_width_max}")
        elif (
            g.pstate == "P0"
            and g.pcie_gen is not None
            and g.pcie_gen_max
            and g.pcie_gen < g.pcie_gen_max
        ):
            problems.append(f"GPU {g.index}: gen {g.pcie_gen} of {g.pcie_gen_max} at P0")
    values = {"degraded_links": float(len(problems))}
    if problems:
        return Finding(Outcome.WARN, f"PCIe links degraded ({'; '.join(problems)})", values)
    return Finding(Outcome.PASS, "PCIe links at full width", values)


def expected_gpus(labels: dict[str, str] | None) -> int | None:
    """The GPU count the node's label promises (None: no label, or not a number)."""
    value = (labels or {}).get(GPU_COUNT_LABEL, "")
    return int(value) if value.isdigit() else None


def light_checks() -> list[Check]:
    """The light GPU checks, in the order the verdict names them."""
    return [
        RuleCheck(
            "gpu-count",
            Kind.LIGHT,
            lambda ctx: count_finding(read_gpus(ctx), expected_gpus(dict(ctx.labels))),
        ),
        RuleCheck("gpu-ecc", Kind.LIGHT, lambda ctx: ecc_finding(read_gpus(ctx))),
        RuleCheck("gpu-row-remap", Kind.LIGHT, lambda ctx: remap_finding(read_gpus(ctx))),
        RuleCheck("gpu-clocks", Kind.LIGHT, lambda ctx: clocks_finding(read_gpus(ctx))),
        RuleCheck("gpu-pcie", Kind.LIGHT, lambda ctx: pcie_finding(read_gpus(ctx))),
    ]
