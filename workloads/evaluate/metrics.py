"""Evaluation metrics as pure functions of per-example results (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per token)."""
    return math.exp(total_nll / tokens) if tokens else float("nan")


def choice_accuracy(scores: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """Share of items whose highest-scoring choice is the labelled one (ties: first wins)."""
    if not labels:
        return float("nan")
    picks = [max(range(len(s)), key=lambda i: s[i]) for s in scores]
    right = sum(p == y for p, y in zip(picks, labels, strict=True))
    return right / len(labels)


@dataclass(frozen=True)
class PRF1:
    """Precision, recall and F1 of one positive class, with the confusion counts."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def precision_recall_f1(predicted: Sequence[bool], actual: Sequence[bool]) -> PRF1:
    """P/R/F1 of the positive class; a ratio with a zero denominator is 0."""
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    fp = sum(p and not a for p, a in zip(predicted, actual, strict=True))
    fn = sum(a and not p for p, a in zip(predicted, actual, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF1(precision, recall, f1, tp, fp, fn)


def relative_drop(base: float, model: float, higher_is_better: bool) -> float:
    """How much worse `model` is than `base`, as a share of `base` (negative: it improved).

    For a lower-is-better score (perplexity) a rise counts as a drop.
    """
    if base == 0 or math.isnan(base) or math.isnan(model):
        return float("nan")
    change = (base - model) / abs(base)
    return change if higher_is_better else -change


def mean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = mean(values)
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in finite) / (len(finite) - 1))
