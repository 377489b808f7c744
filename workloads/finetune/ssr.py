"""Selective Self-Rehearsal (Gupta et al. 2024, arXiv 2409.04787, section 3).

1. the base model answers every training prompt (greedy);
2. a judge decides whether each answer is acceptable given the gold;
3. the target is the model's own answer where accepted, the gold otherwise;
4. ordinary SFT on those targets (see `trainer`).

Training on its own acceptable answers moves the model less than the gold would, which is
why SSR forgets less of what the base knew. SFT is the same pipeline with step 3 always
choosing the gold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from carina.workloads.judges import Judge, JudgeItem, Verdict
from carina.workloads.tasks.types import QAExample, qa_prompt, qa_target

DATASET_FILE = "ssr-dataset.jsonl"


@dataclass(frozen=True)
class SSRRecord:
    """One example of the SSR dataset, as saved beside the checkpoint."""

    id: str
    prompt: str
    gold: str
    model_answer: str | None
    accepted: bool
    reason: str
    target: str  # the response trained on: the model's answer or the gold
    judge_error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def choose_target(gold: str, model_answer: str, verdict: Verdict) -> str:
    """Step 3: the model's own answer if the judge accepted it, else the gold."""
    return model_answer if verdict.accepted else gold


def build_records(
    examples: list[QAExample], answers: list[str], verdicts: list[Verdict]
) -> list[SSRRecord]:
    """The SSR dataset from the base's answers and the judge's verdicts."""
    records = []
    for ex, answer, verdict in zip(examples, answers, verdicts, strict=True):
        records.append(
            SSRRecord(
                id=ex.id,
                prompt=qa_prompt(ex),
                gold=ex.gold,
                model_answer=answer,
                accepted=verdict.accepted,
                reason=verdict.reason,
                target=choose_target(ex.gold, answer, verdict),
                judge_error=verdict.error,
            )
        )
    return records


def sft_records(examples: list[QAExample]) -> list[SSRRecord]:
    """Plain SFT: every target is the gold (no generation, no judge)."""
    return [
        SSRRecord(ex.id, qa_prompt(ex), ex.gold, None, False, "sft", ex.gold) for ex in examples
    ]


def judge_answers(judge: Judge, examples: list[QAExample], answers: list[str]) -> list[Verdict]:
    """Step 2 for a batch."""
    items = [JudgeItem(ex.question, ex.answers, a) for ex, a in zip(examples, answers, strict=True)]
    return judge.judge(items)


def acceptance_rate(records: list[SSRRecord]) -> float:
    """Share of examples whose target is the model's own answer."""
    return sum(r.accepted for r in records) / len(records) if records else 0.0


def training_response(record: SSRRecord) -> str:
    """The response text a record trains on (' target\\n'; EOS is added by the encoder)."""
    return qa_target(record.target)


def dumps_jsonl(records: list[SSRRecord]) -> bytes:
    """The dataset file's content."""
    return "".join(r.to_json() + "\n" for r in records).encode()
