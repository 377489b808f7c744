"""Batched greedy generation for many prompts of different lengths, stopping at a newline.

The model's KV-cache forward has no attention mask, so padded rows would attend to padding.
Prompts are therefore batched by token length (equal lengths need no padding): the output is
exactly what one-at-a-time greedy decoding gives, and with byte tokens and templated prompts
the buckets are still large enough to use the batch.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from carina.workloads.data import Tokenizer
from carina.workloads.models.transformer import Transformer


def stop_ids(tokenizer: Tokenizer) -> set[int]:
    """Tokens that end an answer: EOS and the newline."""
    ids = {tokenizer.eos_id}
    newline = tokenizer.encode("\n")
    if len(newline) == 1:
        ids.add(newline[0])
    return ids


def _until_stop(tokens: list[int], stops: set[int]) -> list[int]:
    """The tokens before the first stop token."""
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i]
    return tokens


@torch.no_grad()
def _greedy(
    model: Transformer, rows: torch.Tensor, max_new: int, stops: set[int]
) -> list[list[int]]:
    """Continue equal-length prompts (B, T0) greedily; each row's tokens up to its first stop.

    Everything stays on the prompts' device; the tokens reach the host once, at the end.
    """
    B, T0 = rows.shape
    total = min(T0 + max_new, model.arch.max_seq_len)
    if total <= T0:
        return [[] for _ in range(B)]
    caches = model.init_caches(B, total)
    logits, _ = model(rows, caches=caches, start=0)
    stop = torch.tensor(sorted(stops), device=rows.device)
    done = torch.zeros(B, dtype=torch.bool, device=rows.device)
    steps: list[torch.Tensor] = []
    for pos in range(T0, total):
        nxt = logits[:, -1].float().argmax(dim=-1)  # (B,)
        steps.append(nxt)
        done |= torch.isin(nxt, stop)
        if pos + 1 >= total or bool(done.all()):
            break
        logits, _ = model(nxt[:, None], caches=caches, start=pos)
    tokens: list[list[int]] = torch.stack(steps, dim=1).tolist()  # (B, n)
    return [_until_stop(row, stops) for row in tokens]


def greedy_ids(
    model: Transformer,
    prompts: list[list[int]],
    max_new_tokens: int,
    stops: set[int],
    batch_size: int = 32,
) -> list[list[int]]:
    """Each prompt's greedy continuation, token ids up to (without) its first stop token.

    A prompt longer than the model's window keeps its last tokens.
    """
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    max_prompt = model.arch.max_seq_len - 1
    encoded = [ids[-max_prompt:] for ids in prompts]
    buckets: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        buckets[len(ids)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for _, idxs in sorted(buckets.items()):
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start : start + batch_size]
            rows = torch.tensor([encoded[i] for i in chunk], device=device)
            for i, ids in zip(chunk, _greedy(model, rows, max_new_tokens, stops), strict=True):
                out[i] = ids
    model.train(was_training)
    return out


def generate_answers(
    model: Transformer,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 32,
) -> list[str]:
    """The greedy one-line continuation of each prompt (without the stop token)."""
    encoded = [tokenizer.encode(p) for p in prompts]
    continued = greedy_ids(model, encoded, max_new_tokens, stop_ids(tokenizer), batch_size)
    return [tokenizer.decode(ids).strip() for ids in continued]
