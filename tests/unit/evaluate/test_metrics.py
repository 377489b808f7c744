"""Evaluation metrics and the comparison report on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from carina.workloads.evaluate import metrics
from carina.workloads.evaluate.harness import TaskResult, refusal_metrics
from carina.workloads.evaluate.report import compare, render_markdown
from carina.workloads.tasks.types import QAExample


def test_perplexity_is_exp_of_mean_nll():
    assert metrics.perplexity(total_nll=2 * math.log(4), tokens=2) == pytest.approx(4.0)


def test_choice_accuracy_counts_argmax_hits():
    scores = [[-1.0, -0.5, -3.0], [-0.1, -2.0, -2.0], [-5.0, -4.0, -1.0]]
    assert metrics.choice_accuracy(scores, [1, 0, 0]) == pytest.approx(2 / 3)


def test_precision_recall_f1_hand_computed():
    predicted = [True, True, False, False, True]
    actual = [True, False, True, False, True]
    prf = metrics.precision_recall_f1(predicted, actual)
    assert (prf.tp, prf.fp, prf.fn) == (2, 1, 1)
    assert prf.precision == pytest.approx(2 / 3)
    assert prf.recall == pytest.approx(2 / 3)
    assert prf.f1 == pytest.approx(2 / 3)


def test_no_positive_predictions_gives_zero_not_a_division_error():
    prf = metrics.precision_recall_f1([False, False], [True, False])
    assert (prf.precision, prf.recall, prf.f1) == (0.0, 0.0, 0.0)


def test_relative_drop_for_accuracy_and_perplexity():
    assert metrics.relative_drop(0.5, 0.4, higher_is_better=True) == pytest.approx(0.2)
    assert metrics.relative_drop(10.0, 12.0, higher_is_better=False) == pytest.approx(0.2)
    assert metrics.relative_drop(0.5, 0.6, higher_is_better=True) == pytest.approx(-0.2)


def test_mean_and_sample_std():
    assert metrics.mean_and_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert metrics.mean_and_std([5.0]) == (5.0, 0.0)


def test_refusal_metrics_on_a_hand_labelled_batch():
    doc = "Ada lives in Rome."
    examples = [
        QAExample(doc, "Where does Ada live?", ("Rome",)),
        QAExample(doc, "Where does Ada live?", ("Rome",)),
        QAExample(doc, "When was Ada born?", ()),
        QAExample(doc, "Where does Ben live?", ()),
    ]
    answers = ["in Rome", "unanswerable", "unanswerable", "Oslo"]
    m = refusal_metrics(examples, answers)
    # Abstained: [F, T, T, F]; unanswerable: [F, F, T, T] -> tp 1, fp 1, fn 1.
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["answerAccuracy"] == pytest.approx(0.5)  # "in Rome" right, the abstention wrong
    assert m["abstentionRate"] == pytest.approx(0.5)


def result(name: str, score: float, higher: bool = True, target: bool = False) -> TaskResult:
    kind = "multiple-choice" if higher else "perplexity"
    metric = "accuracy" if higher else "perplexity"
    return TaskResult(name, kind, metric, score, higher, 10, target, {metric: score})


def test_report_gives_each_change_and_the_average_drop_over_held_out_tasks():
    model = [result("qa", 0.9, target=True), result("mc", 0.4), result("ppl", 12.0, False)]
    base = [result("qa", 0.2, target=True), result("mc", 0.5), result("ppl", 10.0, False)]
    report = compare(model, base, "file:///ft", "file:///base", "W16A16", "W16A16")
    by_name = {t["name"]: t for t in report["tasks"]}
    assert by_name["mc"]["change"] == pytest.approx(-0.1)
    assert by_name["mc"]["relativeDrop"] == pytest.approx(0.2)
    assert by_name["ppl"]["relativeDrop"] == pytest.approx(0.2)
    assert by_name["qa"]["relativeDrop"] == pytest.approx(-3.5)
    assert report["averageDrop"] == pytest.approx(0.2)  # the target task is left out
    assert report["heldOutTasks"] == 2
    md = render_markdown(report)
    assert "| mc | multiple-choice | accuracy | 0.5 | 0.4 | -0.1 | +20.0% |" in md
    assert "Average drop over 2 held-out task(s): +20.0%" in md


def test_report_without_a_baseline_lists_scores_only():
    report = compare([result("mc", 0.4)], None, "file:///m", None, "W16A16", None)
    assert report["averageDrop"] is None
    assert "| mc | multiple-choice | accuracy | - | 0.4 | - | - |" in render_markdown(report)


def test_report_names_the_precision_of_the_model_and_of_its_baseline():
    model, base = [result("ppl", 12.0, False)], [result("ppl", 10.0, False)]
    report = compare(model, base, "file:///q/quantized", "file:///ft", "W4A4", "W16A16")
    assert (report["modelPrecision"], report["baselinePrecision"]) == ("W4A4", "W16A16")
    md = render_markdown(report)
    assert "# Evaluation of `file:///q/quantized` (W4A4)" in md
    assert "Baseline: `file:///ft` (W16A16)" in md
