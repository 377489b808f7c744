"""From check results to the node's verdict: PASS, WARN or EVICT, the check to blame, words.

Rules:
- The verdict is the worst outcome among the checks that ran (PASS < WARN < EVICT).
- UNSUPPORTED results count for nothing; the message lists them apart, with their reason.
- PASS needs every required check (the generic ones, `host.GENERIC`) to have run: a node
  where one of them could not run is WARN, blamed on that check. So a node where nothing could
  be checked is never PASS.
- The blamed check (`carina.dev/health-check`) is the first, in check order, whose outcome is
  the verdict; on PASS it is "".
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from carina.operators.health.checks import CheckResult, Outcome, worst
from carina.platform.api.health import Health

MESSAGE_LIMIT = 1024  # the condition's message (kubectl describe node shows it whole)
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(name: str) -> str:
    """A check name as a label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends."""
    return _LABEL_UNSAFE.sub("-", name)[:63].strip("-_.")


@dataclass(frozen=True)
class Verdict:
    """The node's verdict and what it rests on."""

    health: Health
    check: str  # label-safe name of the blamed check, "" on PASS
    message: str
    results: tuple[CheckResult, ...]

    @property
    def failing(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.outcome in (Outcome.WARN, Outcome.EVICT))

    @property
    def unsupported(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.outcome == Outcome.UNSUPPORTED)


def _message(results: Sequence[CheckResult], missing: Sequence[str]) -> str:
    failing = [r for r in results if r.outcome in (Outcome.WARN, Outcome.EVICT)]
    passed = [r for r in results if r.outcome == Outcome.PASS]
    unsupported = [r for r in results if r.outcome == Outcome.UNSUPPORTED]
    # Worst first, then in check order (sorted is stable).
    failing.sort(key=lambda r: r.outcome != Outcome.EVICT)
    parts = [f"{r.check} {r.outcome.value}: {r.message}" for r in failing]
    if missing:
        parts.append(f"required checks did not run: {', '.join(missing)}")
    if not failing and not missing:
        parts.append(f"{len(passed)} checks passed")
    if unsupported:
        # Checks that could not run for one reason share it: "gpu-count, gpu-ecc (no GPU ...)".
        by_reason: dict[str, list[str]] = {}
        for r in unsupported:
            by_reason.setdefault(r.message, []).append(r.check)
        listed = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
        parts.append(f"unsupported, not counted as passed: {listed}")
    text = "; ".join(parts)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def decide(results: Sequence[CheckResult], required: Collection[str] = ()) -> Verdict:
    """The verdict of these results; `required` names the checks PASS cannot do without."""
    ran = {r.check for r in results if r.outcome != Outcome.UNSUPPORTED}
    missing = [name for name in required if name not in ran]
    outcome = worst(r.outcome for r in results) or Outcome.WARN
    if outcome == Outcome.PASS and missing:
        outcome = Outcome.WARN
    health = Health(outcome.value)
    blamed = next((r.check for r in results if r.outcome == outcome), None)
    if blamed is None and health is not Health.PASS:
        blamed = missing[0] if missing else "no-checks"
    return Verdict(
        health=health,
        check=label_value(blamed or "") if health is not Health.PASS else "",
        message=_message(results, missing),
        results=tuple(results),
    )
