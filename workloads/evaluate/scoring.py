"""Log-likelihoods from a model: of continuations given contexts, and of whole texts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carina.workloads.data import Tokenizer
from carina.workloads.models.transformer import Transformer


@torch.no_grad()
def continuation_logprobs(
    model: Transformer,
    tokenizer: Tokenizer,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """(sum of log p(continuation tokens | context), continuation length) for each pair.

    Sequences are right-padded: a causal model's scores at real positions never see the
    padding. The context is cut from the left when the pair is longer than the model's window.
    """
    model.eval()
    device = model.lm_head.weight.device
    limit = model.arch.max_seq_len + 1
    encoded = []
    for context, continuation in pairs:
        ctx, cont = tokenizer.encode(context), tokenizer.encode(continuation)
        cont = cont[: limit - 1]
        ctx = ctx[max(0, len(ctx) - (limit - len(cont))) :]
        if not ctx:  # the first continuation token needs something to be predicted from
            ctx = [tokenizer.bos_id]
        encoded.append((ctx, cont))
    out: list[tuple[float, int]] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        seqs = [c + k for c, k in chunk]
        width = max(len(s) for s in seqs) - 1
        inputs = torch.full((len(seqs), width), tokenizer.pad_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            inputs[row, : len(s) - 1] = torch.tensor(s[:-1])
        logits, _ = model(inputs.to(device))
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        for row, (ctx, cont) in enumerate(chunk):
            # Token s[i] (i >= len(ctx)) is predicted at position i - 1.
            pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=logp.device)
            tok = torch.tensor(cont, device=logp.device)
            out.append((float(logp[row, pos, tok].sum()), len(cont)))
    return out


@torch.no_grad()
def text_nll(
    model: Transformer, tokenizer: Tokenizer, texts: list[str], max_windows: int = 64
) -> tuple[float, int]:
    """(total negative log-likelihood, tokens scored) of `texts` in non-overlapping windows.

    Each text is followed by EOS and cut into windows of the model's length; at most
    `max_windows` windows are scored, so a large corpus costs a bounded time.
    """
    model.eval()
    device = model.lm_head.weight.device
    T = model.arch.max_seq_len
    stream: list[int] = []
    for text in texts:
        stream += [*tokenizer.encode(text), tokenizer.eos_id]
        if len(stream) > (T + 1) * max_windows:
            break
    total, count = 0.0, 0
    for w in range(min(max_windows, max(0, (len(stream) - 1) // T))):
        chunk = torch.tensor(stream[w * T : w * T + T + 1], device=device)
        logits, _ = model(chunk[None, :-1])
        nll = F.cross_entropy(logits[0].float(), chunk[1:], reduction="sum")
        total += float(nll)
        count += T
    return total, count
