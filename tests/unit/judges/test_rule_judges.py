"""Rule-based judges: normalised matching, wrapped answers and the abstention rule."""

from __future__ import annotations

import pytest

from carina.workloads.config import JudgeKind, JudgeSpec
from carina.workloads.judges import JudgeItem, build_judge
from carina.workloads.judges.normalize import is_abstention, normalize_answer, token_f1
from carina.workloads.judges.rule import ExactJudge, RuleJudge


def item(candidate: str, *golds: str) -> JudgeItem:
    return JudgeItem("Where does Ada live?", tuple(golds), candidate)


def test_normalisation_drops_case_punctuation_articles_and_spells_numbers():
    assert normalize_answer("  The City of ROME! ") == "city of rome"
    assert normalize_answer("Three.") == "3"
    assert normalize_answer("it's") == "its"


@pytest.mark.parametrize(
    "text",
    [
        "unanswerable",
        "Unanswerable.",
        "I don't know",
        "The document does not say.",
        "This cannot be answered from the text",
        "Not mentioned in the document",
    ],
)
def test_abstentions_are_detected(text: str):
    assert is_abstention(text)


@pytest.mark.parametrize("text", ["Rome", "not before 1990", "no", "", "in 1987"])
def test_answers_and_silence_are_not_abstentions(text: str):
    assert not is_abstention(text)


def test_exact_judge_accepts_any_valid_surface_form_after_normalisation():
    judge = ExactJudge()
    verdicts = judge.judge([item("three", "3", "three"), item("3.", "3"), item("4", "3")])
    assert [v.accepted for v in verdicts] == [True, True, False]


def test_exact_judge_rejects_a_wrapped_answer_that_the_rule_judge_accepts():
    wrapped = item("It is in Rome", "Rome")
    assert not ExactJudge().judge([wrapped])[0].accepted
    assert RuleJudge().judge([wrapped])[0].accepted


def test_rule_judge_rejects_a_long_answer_that_merely_mentions_the_gold():
    long_answer = item("Ada used to visit Rome but she now lives somewhere else", "Rome")
    assert not RuleJudge().judge([long_answer])[0].accepted


@pytest.mark.parametrize("judge", [ExactJudge(), RuleJudge()])
def test_unanswerable_question_accepts_only_an_abstention(judge):
    abstains, guesses = item("I don't know"), item("Rome")
    verdicts = judge.judge([abstains, guesses])
    assert verdicts[0].accepted
    assert not verdicts[1].accepted
    assert "unanswerable" in verdicts[1].reason


@pytest.mark.parametrize("judge", [ExactJudge(), RuleJudge()])
def test_abstaining_on_an_answerable_question_is_rejected(judge):
    verdict = judge.judge([item("unanswerable", "Rome")])[0]
    assert not verdict.accepted
    assert "abstained" in verdict.reason


def test_an_empty_answer_is_never_accepted():
    assert not RuleJudge().judge([item("", "Rome")])[0].accepted
    assert not RuleJudge().judge([item("  ")])[0].accepted


def test_token_f1_is_squad_overlap():
    assert token_f1("in Rome", "Rome") == pytest.approx(2 / 3)
    assert token_f1("Rome", "Rome") == 1.0
    assert token_f1("Oslo", "Rome") == 0.0


def test_factory_builds_the_kind_asked_for():
    assert build_judge(JudgeSpec(kind=JudgeKind.EXACT)).name == "exact"
    assert build_judge(JudgeSpec(kind=JudgeKind.RULE)).name == "rule"
