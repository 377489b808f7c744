"""The judge interface: what every judge takes (`JudgeItem`) and returns (`Verdict`).

The implementations import it; `factory.build_judge` imports them, so it lives above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class JudgeItem:
    """What a judge sees: the question, the valid gold forms (none: unanswerable), the candidate."""

    question: str
    golds: tuple[str, ...]
    candidate: str

    @property
    def answerable(self) -> bool:
        return bool(self.golds)


@dataclass(frozen=True)
class Verdict:
    """Accepted or not, and why; `error` is set when the judge could not decide (rejected)."""

    accepted: bool
    reason: str = ""
    error: str | None = None


class Judge(Protocol):
    """Anything that turns a batch of items into one verdict each."""

    name: str

    def judge(self, items: list[JudgeItem]) -> list[Verdict]: ...
