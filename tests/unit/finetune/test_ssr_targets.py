"""SSR's target construction: accepted -> the model's own answer, rejected -> the gold."""

from __future__ import annotations

import json

from carina.workloads.finetune import ssr
from carina.workloads.judges import Verdict
from carina.workloads.judges.rule import RuleJudge
from carina.workloads.tasks.types import ABSTENTION, QAExample

DOC = "Ada lives in Rome. Ada has three cats."
EXAMPLES = [
    QAExample(DOC, "Where does Ada live?", ("Rome", "in Rome"), "a"),
    QAExample(DOC, "How many cats does Ada have?", ("3", "three"), "b"),
    QAExample(DOC, "When was Ada born?", (), "c"),
    QAExample(DOC, "Where does Ben live?", (), "d"),
]


def test_accepted_answer_becomes_the_target_and_rejected_falls_back_to_gold():
    accepted = ssr.choose_target("Rome", "in Rome", Verdict(True))
    rejected = ssr.choose_target("Rome", "Oslo", Verdict(False))
    assert (accepted, rejected) == ("in Rome", "Rome")


def test_records_from_judged_answers():
    answers = ["in Rome", "four", "I don't know", "Oslo"]
    verdicts = ssr.judge_answers(RuleJudge(), EXAMPLES, answers)
    records = ssr.build_records(EXAMPLES, answers, verdicts)
    assert [r.accepted for r in records] == [True, False, True, False]
    assert [r.target for r in records] == ["in Rome", "3", "I don't know", ABSTENTION]
    assert [r.model_answer for r in records] == answers
    assert ssr.acceptance_rate(records) == 0.5


def test_a_judge_error_counts_as_rejected_and_is_recorded():
    verdicts = [Verdict(False, "judge error", "timed out")] + [Verdict(True)] * 3
    records = ssr.build_records(EXAMPLES, ["Rome", "3", "x", "y"], verdicts)
    assert records[0].target == "Rome"  # the gold
    assert records[0].judge_error == "timed out"


def test_sft_targets_are_always_the_gold():
    records = ssr.sft_records(EXAMPLES)
    assert [r.target for r in records] == ["Rome", "3", ABSTENTION, ABSTENTION]
    assert ssr.acceptance_rate(records) == 0.0


def test_dataset_file_has_one_json_record_per_example_with_every_field():
    answers = ["in Rome", "four", "I don't know", "Oslo"]
    records = ssr.build_records(
        EXAMPLES, answers, ssr.judge_answers(RuleJudge(), EXAMPLES, answers)
    )
    lines = ssr.dumps_jsonl(records).decode().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 4
    assert set(first) >= {"prompt", "gold", "model_answer", "accepted", "target"}
    assert first["prompt"].endswith("Answer:")


def test_training_response_is_the_target_on_one_line():
    record = ssr.sft_records(EXAMPLES[:1])[0]
    assert ssr.training_response(record) == " Rome\n"
