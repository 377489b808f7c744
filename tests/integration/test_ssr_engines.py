"""SSR's training set is the same whether the plain loop or Ray Data builds it.

A real local Ray cluster (two actor pools at half a CPU each), the same tiny checkpoint, the
same examples and the deterministic `exact` judge on both paths. The examples are made so
that the judge accepts about half of the model's answers: each even answerable example gets
the base's own greedy answer as a second gold form, so its target (the model's answer)
differs from its canonical gold.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
from finetune_fixtures import base_uri

from carina.workloads.config import FinetuneConfig
from carina.workloads.data import ByteTokenizer
from carina.workloads.finetune import ssr
from carina.workloads.finetune.run import build_dataset
from carina.workloads.models.generation import generate_answers
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.tasks import grounded_qa

pytestmark = pytest.mark.slow
__all__ = ["base_uri"]

EXAMPLES = 48
MAX_NEW_TOKENS = 6


def examples_the_base_half_answers(base: str, path: Path) -> None:
    """A carina-qa file whose even answerable examples accept the base's own answer."""
    examples = grounded_qa.generate(EXAMPLES, 3)
    model = checkpoint.load_pretrained(base)
    answers = generate_answers(
        model, ByteTokenizer(), [ssr.qa_prompt(ex) for ex in examples], MAX_NEW_TOKENS
    )
    rows = []
    for i, (ex, answer) in enumerate(zip(examples, answers, strict=True)):
        if i % 2 == 0 and ex.answerable:
            ex = dataclasses.replace(ex, answers=(*ex.answers, answer))
        rows.append(
            {"id": f"q{i}", **{k: v for k, v in dataclasses.asdict(ex).items() if k != "id"}}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def config(base: str, data: Path, engine: str) -> FinetuneConfig:
    return FinetuneConfig.model_validate(
        {
            "base": base,
            "mode": "ssr",
            "judge": {"kind": "exact"},
            "data": {"format": "carina-qa", "path": str(data), "examples": EXAMPLES},
            "maxNewTokens": MAX_NEW_TOKENS,
            # Batches of 5 on Ray, 64 in the plain loop: the answers must not depend on batching.
            "ssr": {"engine": engine, "batchSize": 5, "actorCpus": 0.5},
        }
    )


def test_the_plain_loop_and_ray_data_accept_the_same_answers(tmp_path, base_uri, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written into the user's ~/.ray
    data = tmp_path / "qa.jsonl"
    examples_the_base_half_answers(base_uri, data)
    model = checkpoint.load_pretrained(base_uri)

    plain = build_dataset(config(base_uri, data, "plain"), model, ByteTokenizer())
    flag = PreemptionFlag().install()
    try:
        on_ray = build_dataset(config(base_uri, data, "ray"), model, ByteTokenizer())
        # Ray installs a SIGTERM handler of its own: a preemption must still reach the run loop.
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested
    finally:
        flag.uninstall()

    accepted = [(r.id, r.target) for r in plain if r.accepted]
    assert EXAMPLES // 5 <= len(accepted) <= EXAMPLES // 2
    assert all(r.target != r.gold for r in plain if r.accepted)
    assert [(r.id, r.target) for r in on_ray if r.accepted] == accepted
    assert on_ray == plain  # every field, in the examples' order
