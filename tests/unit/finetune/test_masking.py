"""The loss covers the response only: prompt and padding positions are ignored."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carina.workloads.data import ByteTokenizer
from carina.workloads.finetune.masking import IGNORE, Pair, collate, encode_pair

TOK = ByteTokenizer()


def test_labels_cover_exactly_the_response_and_eos():
    inputs, labels = encode_pair(TOK, Pair("Q:", " ab"), max_len=64)
    assert inputs == [ord("Q"), ord(":"), ord(" "), ord("a"), ord("b")]
    # Positions 0 predicts ':' (prompt) -> ignored; 1 predicts ' ' ... 4 predicts EOS.
    assert labels == [IGNORE, ord(" "), ord("a"), ord("b"), TOK.eos_id]


def test_a_long_prompt_is_cut_from_the_left_so_the_response_survives():
    inputs, labels = encode_pair(TOK, Pair("x" * 100, " yes"), max_len=10)
    assert len(inputs) == len(labels) == 10
    assert [t for t in labels if t != IGNORE] == [*TOK.encode(" yes"), TOK.eos_id]


def test_padding_is_ignored():
    batch = [encode_pair(TOK, Pair("Q:", " a"), 64), encode_pair(TOK, Pair("Question:", " b"), 64)]
    inputs, labels = collate(batch, TOK.pad_id)
    assert inputs.shape == labels.shape == (2, len(batch[1][0]))
    assert inputs[0, -1] == TOK.pad_id
    assert labels[0, -1] == IGNORE


def test_loss_depends_on_the_response_tokens_only(make_model):
    model = make_model()
    inputs, labels = collate([encode_pair(TOK, Pair("Some prompt:", " ok"), 64)], TOK.pad_id)
    _, loss = model(inputs, labels)
    logits, _ = model(inputs)
    keep = labels[0] != IGNORE
    manual = F.cross_entropy(logits[0][keep], labels[0][keep])
    assert torch.allclose(loss, manual)
    assert int(keep.sum()) == len(" ok") + 1  # response bytes and EOS


def test_prompt_tokens_get_no_gradient_signal_as_targets(make_model):
    model = make_model()
    a = collate([encode_pair(TOK, Pair("Prompt A:", " ok"), 64)], TOK.pad_id)
    b = collate([encode_pair(TOK, Pair("Prompt A:", " ok"), 64)], TOK.pad_id)
    # Same inputs, labels differing only at prompt positions (all ignored anyway): same loss.
    b[1][0, 0] = IGNORE
    assert torch.equal(model(*a)[1], model(*b)[1])
