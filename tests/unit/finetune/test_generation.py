"""Batched generation gives what one-at-a-time greedy decoding gives, one line per prompt."""

from __future__ import annotations

import torch

from carina.workloads.data import ByteTokenizer
from carina.workloads.models.generation import generate_answers

TOK = ByteTokenizer()
PROMPTS = ["Document: a.\nQuestion: b?\nAnswer:", "Q: x?\nA:", "Q: y?\nA:", "Longer prompt here:"]


def test_batched_equals_unbatched(make_model):
    model = make_model()
    batched = generate_answers(model, TOK, PROMPTS, max_new_tokens=12, batch_size=8)
    single = [generate_answers(model, TOK, [p], 12, batch_size=1)[0] for p in PROMPTS]
    assert batched == single


def test_answers_stop_at_the_first_newline(make_model):
    model = make_model()
    # Constant final features and a head that only scores the newline: it always comes next.
    model.norm.register_forward_hook(lambda module, args, out: torch.ones_like(out))
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[ord("\n")] = 1.0
    assert generate_answers(model, TOK, PROMPTS, max_new_tokens=12) == [""] * len(PROMPTS)


def test_generation_leaves_the_training_mode_as_it_was(make_model):
    model = make_model().train()
    generate_answers(model, TOK, PROMPTS[:1], max_new_tokens=2)
    assert model.training
