"""The judge interface and the factory that builds one from a `JudgeSpec`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from carina.workloads.config import JudgeKind, JudgeSpec


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


def build_judge(spec: JudgeSpec) -> Judge:
    """The judge `spec` asks for (each kind imports its own dependencies, when built)."""
    kind = JudgeKind(spec.kind)
    if kind == JudgeKind.EXACT:
        from carina.workloads.judges.rule import ExactJudge

        return ExactJudge()
    if kind == JudgeKind.RULE:
        from carina.workloads.judges.rule import RuleJudge

        return RuleJudge()
    if kind == JudgeKind.EMBEDDING:
        from carina.workloads.judges.embedding import EmbeddingJudge

        return EmbeddingJudge(threshold=spec.threshold)
    from carina.workloads.judges.http import HttpJudge

    return HttpJudge.from_spec(spec)
