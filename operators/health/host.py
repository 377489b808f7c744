"""The generic checks every node runs, GPUs or not: disk, memory, clock, the API server.

- disk: free space on / and any configured path: under 10% -> WARN, under 2% -> EVICT (a
  checkpoint or a container image can no longer be written).
- memory: MemAvailable under 5% of MemTotal -> WARN (the kubelet's eviction handles worse).
- clock-skew: this machine's clock against the API server's `Date` header, taken at the middle
  of the round's Node read: more than 2 s apart -> WARN. `Date` has whole seconds, so 2 s is
  the smallest limit that two synchronised clocks never cross by rounding and a slow answer;
  skewed clocks break token lifetimes and make a job's timeline lie.
- api-server: the round's read of the Node failed -> WARN (the verdict cannot be written then,
  but the metrics say it).

A node is PASS only when all four ran (`GENERIC`, see verdict.py): they are what every node can
check, so a node that could check nothing is never called healthy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from carina.operators.health.checks import (
    ApiReading,
    Check,
    Context,
    Finding,
    Kind,
    Outcome,
    RuleCheck,
    unsupported,
    worst,
)

DISK_WARN_FRACTION = 0.10
DISK_EVICT_FRACTION = 0.02
MEMORY_WARN_FRACTION = 0.05
SKEW_WARN_SECONDS = 2.0
MEMINFO = Path("/proc/meminfo")

GENERIC = ("disk", "memory", "clock-skew", "api-server")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def disk_finding(path: str, free_bytes: int, total_bytes: int) -> Finding:
    """One filesystem's free space against the WARN and EVICT floors."""
    if total_bytes <= 0:
        return unsupported(f"{path}: no size reported")
    fraction = free_bytes / total_bytes
    values = {"free_fraction": fraction, "free_bytes": float(free_bytes)}
    words = f"{path}: {_percent(fraction)} free ({free_bytes / 2**30:.1f} GiB)"
    if fraction < DISK_EVICT_FRACTION:
        return Finding(Outcome.EVICT, words, values)
    if fraction < DISK_WARN_FRACTION:
        return Finding(Outcome.WARN, words, values)
    return Finding(Outcome.PASS, words, values)


def disks_finding(findings: Sequence[Finding]) -> Finding:
    """The disk check over every path: the worst one decides, every path is named."""
    outcome = worst(f.outcome for f in findings)
    if outcome is None:
        return unsupported("; ".join(f.message for f in findings) or "no path to check")
    values = {}
    ran = [f for f in findings if f.outcome != Outcome.UNSUPPORTED]
    if ran:
        values["min_free_fraction"] = min(f.values["free_fraction"] for f in ran)
    return Finding(outcome, "; ".join(f.message for f in findings), values)


def read_disk(path: str) -> Finding:
    """statvfs of one path: the space an unprivileged writer may still use."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return unsupported(f"{path}: {exc.strerror or exc}")
    return disk_finding(path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo's fields in bytes (the file says kB)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def memory_finding(meminfo: dict[str, int]) -> Finding:
    """Memory the kernel could hand out without swapping, against MemTotal."""
    total, available = meminfo.get("MemTotal"), meminfo.get("MemAvailable")
    if not total or available is None:
        return unsupported("no MemTotal/MemAvailable in /proc/meminfo")
    fraction = available / total
    values = {"available_fraction": fraction, "available_bytes": float(available)}
    words = f"{_percent(fraction)} of memory available ({available / 2**30:.1f} GiB)"
    if fraction < MEMORY_WARN_FRACTION:
        return Finding(Outcome.WARN, words, values)
    return Finding(Outcome.PASS, words, values)


def read_memory(_: Context) -> Finding:
    try:
        text = MEMINFO.read_text()
    except OSError:
        return unsupported(f"{MEMINFO} is not readable (not Linux?)")
    return memory_finding(parse_meminfo(text))


def skew_finding(api: ApiReading) -> Finding:
    """This machine's clock against the API server's."""
    if api.skew_s is None:
        why = f"API server not reached: {api.error}" if api.error else "no Date header"
        return unsupported(f"cannot compare clocks ({why})")
    values = {"skew_seconds": api.skew_s}
    words = f"clock {api.skew_s:+.1f} s from the API server's"
    if abs(api.skew_s) > SKEW_WARN_SECONDS:
        return Finding(Outcome.WARN, words, values)
    return Finding(Outcome.PASS, words, values)


def api_finding(api: ApiReading) -> Finding:
    """The round's read of the Node object."""
    if api.error:
        return Finding(Outcome.WARN, f"API server not reached: {api.error}")
    return Finding(
        Outcome.PASS,
        f"API server answered in {api.latency_s * 1000:.0f} ms",
        {"latency_seconds": api.latency_s},
    )


def generic_checks(disk_paths: Sequence[str] = ("/",)) -> list[Check]:
    """The checks of `GENERIC`, in that order."""
    paths = tuple(dict.fromkeys(disk_paths))
    return [
        RuleCheck("disk", Kind.LIGHT, lambda _: disks_finding([read_disk(p) for p in paths])),
        RuleCheck("memory", Kind.LIGHT, read_memory),
        RuleCheck("clock-skew", Kind.LIGHT, lambda ctx: skew_finding(ctx.api)),
        RuleCheck("api-server", Kind.LIGHT, lambda ctx: api_finding(ctx.api)),
    ]
