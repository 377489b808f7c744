"""Judges without a model: normalised exact match, and a rule that also accepts wrapped answers.

Both apply the abstention rule first (the SSR paper's task): for an unanswerable question the
candidate must abstain; for an answerable one an abstention is wrong.
"""

from __future__ import annotations

from carina.workloads.judges.base import JudgeItem, Verdict
from carina.workloads.judges.normalize import is_abstention, normalize_answer

# A wrapped answer ("it is red", "in Rome") may add this many tokens around a gold form;
# more and it is a different, longer answer that happens to mention the gold.
MAX_EXTRA_TOKENS = 3


def abstention_verdict(item: JudgeItem) -> Verdict | None:
    """The verdict the abstention rule alone decides, or None when the answer must be compared."""
    if not normalize_answer(item.candidate):
        return Verdict(False, "empty answer")
    abstains = is_abstention(item.candidate)
    if not item.answerable:
        return Verdict(abstains, "abstained" if abstains else "answered an unanswerable question")
    if abstains:
        return Verdict(False, "abstained on an answerable question")
    return None


class ExactJudge:
    """Accepts a candidate equal to a gold form after normalisation."""

    name = "exact"

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        return [self._one(item) for item in items]

    def _one(self, item: JudgeItem) -> Verdict:
        decided = abstention_verdict(item)
        if decided is not None:
            return decided
        cand = normalize_answer(item.candidate)
        if any(cand == normalize_answer(g) for g in item.golds):
            return Verdict(True, "matches a gold form")
        return Verdict(False, "matches no gold form")


class RuleJudge(ExactJudge):
    """Exact match, or a gold form inside a short candidate as whole words ("it is red")."""

    name = "rule"

    def _one(self, item: JudgeItem) -> Verdict:
        verdict = super()._one(item)
        if verdict.accepted or not item.answerable or is_abstention(item.candidate):
            return verdict
        cand = normalize_answer(item.candidate).split()
        for gold in item.golds:
            g = normalize_answer(gold).split()
            if g and len(cand) <= len(g) + MAX_EXTRA_TOKENS and _contains(cand, g):
                return Verdict(True, f"contains the gold form {gold!r}")
        return verdict


def _contains(tokens: list[str], part: list[str]) -> bool:
    n = len(part)
    return any(tokens[i : i + n] == part for i in range(len(tokens) - n + 1))
