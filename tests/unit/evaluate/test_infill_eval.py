"""The infilling evaluation: exact match of generated middles in PSM and SPM layouts."""

from __future__ import annotations

import pytest
import torch

from carina.workloads.config import EvalTask, ExitCode, ModelSpec, TaskDataSpec
from carina.workloads.data import ByteTokenizer
from carina.workloads.errors import WorkerError
from carina.workloads.evaluate.harness import run_task
from carina.workloads.evaluate.infill import InfillItem, make_items, score_infill
from carina.workloads.fim import Sentinels
from carina.workloads.models.transformer import Transformer

TOK = ByteTokenizer(fim=True)
S = TOK.FIM_SENTINELS
DOCS = [
    "def area(width, height):\n    return width * height\n",
    "for name in sorted(names):\n    print(name.upper())\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n",
]


def oracle(items: list[InfillItem], s: Sentinels, wrong: bool = False):
    """A model whose generation is a pure function of the prompt: it looks the middle up."""
    middles = {}
    for it in items:
        middles[(s.prefix, *it.prefix, s.suffix, *it.suffix, s.middle)] = it.middle
        middles[(s.suffix, *it.suffix, s.prefix, *it.prefix, s.middle)] = it.middle

    def generate(prompts: list[list[int]], budget: int) -> list[list[int]]:
        out = []
        for p in prompts:
            middle = middles[tuple(p)]
            out.append([(t + 1) % 256 for t in middle] if wrong else middle[:budget])
        return out

    return generate


def test_spans_are_seeded_and_have_context_on_both_sides() -> None:
    items = make_items(DOCS, TOK, seed=3, n=30, max_middle=6, context=10)
    assert len(items) == 30
    assert make_items(DOCS, TOK, seed=3, n=30, max_middle=6, context=10) == items
    assert make_items(DOCS, TOK, seed=4, n=30, max_middle=6, context=10) != items
    for it in items:
        assert 1 <= len(it.middle) <= 6
        assert 1 <= len(it.prefix) <= 10
        assert 1 <= len(it.suffix) <= 10
        joined = TOK.decode(it.prefix + it.middle + it.suffix)
        assert any(joined in doc for doc in DOCS)


def test_a_model_that_knows_every_middle_scores_one() -> None:
    items = make_items(DOCS, TOK, seed=0, n=20)
    scores = score_infill(oracle(items, S), items, S)
    assert scores["exactMatch"] == 1.0
    assert scores["exactMatchPSM"] == scores["exactMatchSPM"] == 1.0
    assert scores["prefixMatchPSM"] == 1.0


def test_a_model_that_writes_the_wrong_middle_scores_zero() -> None:
    items = make_items(DOCS, TOK, seed=0, n=20)
    scores = score_infill(oracle(items, S, wrong=True), items, S)
    assert scores["exactMatch"] == 0.0
    assert scores["prefixMatchSPM"] == 0.0


def test_a_model_that_does_not_stop_after_the_middle_gets_no_exact_match() -> None:
    items = make_items(DOCS, TOK, seed=0, n=10)
    right = oracle(items, S)

    def rambling(prompts: list[list[int]], budget: int) -> list[list[int]]:
        return [(m + [ord(" ")] * budget)[:budget] for m in right(prompts, budget)]

    scores = score_infill(rambling, items, S)
    assert scores["exactMatch"] == 0.0
    assert scores["prefixMatchPSM"] == 1.0


def tiny(vocab: int) -> Transformer:
    torch.manual_seed(0)
    spec = ModelSpec(preset="tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, max_seq_len=64)
    return Transformer(spec.resolve(vocab_size=vocab))


def test_the_infill_task_runs_a_real_model_through_greedy_decoding() -> None:
    task = EvalTask(
        name="fim", kind="infill", data=TaskDataSpec(generator="python-stdlib", examples=8)
    )
    result = run_task(tiny(264), task, DOCS, batch_size=4, max_new_tokens=8)
    assert result.metric == "exactMatch"
    assert result.higher_is_better
    assert result.metrics["items"] == 8
    assert 0.0 <= result.score <= 1.0


def test_a_model_without_fim_tokens_is_refused_with_the_reason() -> None:
    task = EvalTask(name="fim", kind="infill", data=TaskDataSpec(generator="python-stdlib"))
    with pytest.raises(WorkerError, match=r"needs a model pretrained with data\.fim") as e:
        run_task(tiny(260), task, DOCS, batch_size=4, max_new_tokens=8)
    assert e.value.exit_code == ExitCode.BAD_CONFIG
