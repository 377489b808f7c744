"""Judges: decide whether a model's own answer is acceptable given the gold (SSR, evaluation).

`build_judge(spec)` returns one of: `exact` and `rule` (normalised matching, abstention
detection), `embedding` (all-MiniLM-L6-v2 cosine similarity, offline) and `http` (an
OpenAI-compatible chat endpoint). Every judge takes a batch of `JudgeItem`s and returns one
`Verdict` per item; a judge that cannot decide returns a rejection carrying the error, so
the caller falls back to the gold and the run goes on.
"""

from carina.workloads.judges.base import Judge, JudgeItem, Verdict
from carina.workloads.judges.factory import build_judge

__all__ = ["Judge", "JudgeItem", "Verdict", "build_judge"]
