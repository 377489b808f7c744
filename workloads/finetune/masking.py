"""Prompt/response pairs as token batches whose loss covers the response only.

A pair becomes `prompt + response + EOS`; its labels are the next tokens, with every position
that predicts a prompt token (or padding) set to IGNORE, so cross-entropy averages over the
response and its EOS alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from carina.workloads.data import ByteTokenizer, HFTokenizer

IGNORE = -100  # torch's cross_entropy ignore_index


@dataclass(frozen=True)
class Pair:
    """One supervised example: what the model is given and what it should say."""

    prompt: str
    response: str


def encode_pair(
    tokenizer: ByteTokenizer | HFTokenizer, pair: Pair, max_len: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one pair, both max_len or shorter.

    The prompt is cut from the left when the whole does not fit, so the response survives.
    """
    prompt = tokenizer.encode(pair.prompt)
    response = [*tokenizer.encode(pair.response), tokenizer.eos_id]
    response = response[:max_len]
    prompt = prompt[max(0, len(prompt) - (max_len + 1 - len(response))) :]
    seq = prompt + response  # at most max_len + 1 tokens
    inputs, targets = seq[:-1], seq[1:]
    # Position t predicts seq[t+1]: a response token iff t+1 >= len(prompt).
    labels = [tok if t + 1 >= len(prompt) else IGNORE for t, tok in enumerate(targets)]
    return inputs, labels


def collate(
    encoded: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) inputs and labels; padding is ignored by the loss."""
    width = max(len(ids) for ids, _ in encoded)
    inputs = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for row, (ids, lab) in enumerate(encoded):
        inputs[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
    return inputs, labels
