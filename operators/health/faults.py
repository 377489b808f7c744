"""Fault drills: a JSON file that overrides checks' results (`--fault-file`).

    {"gpu-ecc": {"result": "EVICT", "message": "drill: uncorrectable ECC errors"}}

The agent reads the file at every round (a drill starts and ends by editing it; a missing file
means no fault). A fault replaces the named check's result, whether the check ran this round or
not (an invasive check's drill need not wait for an idle node); a name that is no check of the
agent adds a result of that name. On a fake (kwok) node, where nothing real can fail, the file
is how tests make a node unhealthy; on a real node the same file serves fault drills.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from carina.operators.health.checks import CheckResult, Finding, Kind, Outcome


class FaultFileError(ValueError):
    """The fault file is not what it should be; the message says what and where."""


def parse_faults(text: str, source: str = "fault file") -> dict[str, Finding]:
    """Check name -> the Finding to report instead (raises FaultFileError)."""
    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise FaultFileError(f"{source}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FaultFileError(f"{source}: expected an object of check name -> fault")
    faults = {}
    for name, fault in doc.items():
        if not isinstance(fault, dict):
            raise FaultFileError(f"{source}: {name}: expected {{'result': ..., 'message': ...}}")
        try:
            outcome = Outcome(str(fault.get("result", "")).upper())
        except ValueError:
            choices = ", ".join(o.value for o in Outcome)
            raise FaultFileError(
                f"{source}: {name}.result: {fault.get('result')!r} is not one of {choices}"
            ) from None
        message = str(fault.get("message") or f"fault drill: {outcome.value}")
        faults[str(name)] = Finding(outcome, message)
    return faults


def read_faults(path: Path | None) -> dict[str, Finding]:
    """The faults in the file now; none when there is no file (FaultFileError if unreadable)."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FaultFileError(f"{path}: {exc.strerror or exc}") from None
    return parse_faults(text, str(path))


def apply_faults(
    results: Sequence[CheckResult],
    faults: Mapping[str, Finding],
    kinds: Mapping[str, Kind] | None = None,
) -> list[CheckResult]:
    """The results with every faulted check's result replaced (or added, at the end, of the
    kind `kinds` gives the name: light for a name that is no check)."""
    out = [
        CheckResult.of(r.check, r.kind, faults[r.check]) if r.check in faults else r
        for r in results
    ]
    known = {r.check for r in results}
    out += [
        CheckResult.of(name, (kinds or {}).get(name, Kind.LIGHT), finding)
        for name, finding in faults.items()
        if name not in known
    ]
    return out
