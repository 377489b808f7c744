"""The factory that builds a judge from a `JudgeSpec` (above the implementations it imports)."""

from __future__ import annotations

from carina.workloads.config import JudgeKind, JudgeSpec
from carina.workloads.judges.base import Judge


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
