"""Infilling: can a model write the missing middle of a document given its prefix and suffix?

`n` spans of 1 to `max_middle` tokens are cut out of the held-out documents in turn, each at
a seeded random place, with up to `context` tokens on either side. The model reads the FIM
prompt (PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle>, or SPM) and decodes
greedily until <fim_end> or EOS. Scored per layout:

- exactMatch: the generated tokens are the middle, then the end marker (nothing more or less);
- prefixMatch: the generation starts with the middle (it may fail to stop).

A model never trained with FIM scores about 0 here while its left-to-right loss is untouched;
the FIM rate's cost on left-to-right loss is measured beside it (bench/fim.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from carina.workloads.data import Tokenizer
from carina.workloads.evaluate import metrics
from carina.workloads.fim import Sentinels, prompt_ids
from carina.workloads.models.generation import greedy_ids
from carina.workloads.models.transformer import Transformer

LAYOUTS = ("psm", "spm")
DEFAULT_MAX_MIDDLE = 8  # tokens: short spans, as single-line infilling benchmarks use
DEFAULT_CONTEXT = 96  # tokens kept on either side of the span

# prompts (token ids), a budget of new tokens -> each prompt's continuation (up to a stop)
Generate = Callable[[list[list[int]], int], list[list[int]]]


@dataclass(frozen=True)
class InfillItem:
    """One document cut around its missing middle (token ids)."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]


def make_items(
    docs: list[str],
    tokenizer: Tokenizer,
    seed: int,
    n: int,
    max_middle: int = DEFAULT_MAX_MIDDLE,
    context: int = DEFAULT_CONTEXT,
) -> list[InfillItem]:
    """`n` random spans, from the documents in turn (those too short for one are skipped)."""
    rng = random.Random(seed)
    encoded = [ids for ids in (tokenizer.encode(d) for d in docs) if len(ids) >= max_middle + 2]
    items: list[InfillItem] = []
    for k in range(n if encoded else 0):
        ids = encoded[k % len(encoded)]
        length = rng.randint(1, max_middle)
        start = rng.randint(1, len(ids) - length - 1)  # never an empty prefix or suffix
        end = start + length
        items.append(
            InfillItem(
                ids[max(0, start - context) : start], ids[start:end], ids[end : end + context]
            )
        )
    return items


def score_infill(
    generate: Generate, items: list[InfillItem], sentinels: Sentinels
) -> dict[str, float]:
    """Exact and prefix match of the generated middles, per layout and over both."""
    budget = max((len(it.middle) for it in items), default=0) + 1
    out: dict[str, float] = {}
    exact_all: list[float] = []
    for layout in LAYOUTS:
        prompts = [prompt_ids(it.prefix, it.suffix, layout == "spm", sentinels) for it in items]
        produced = generate(prompts, budget)
        exact, starts = [], []
        for it, gen in zip(items, produced, strict=True):
            # A generation ends at its first stop: the end marker or EOS (not part of `gen`).
            stopped = len(gen) < budget
            exact.append(float(gen == it.middle and stopped))
            starts.append(float(gen[: len(it.middle)] == it.middle))
        out[f"exactMatch{layout.upper()}"] = metrics.mean(exact)
        out[f"prefixMatch{layout.upper()}"] = metrics.mean(starts)
        exact_all += exact
    out["exactMatch"] = metrics.mean(exact_all)
    out["items"] = float(len(items))
    return out


def model_generator(model: Transformer, stops: set[int], batch_size: int) -> Generate:
    """`Generate` by greedy decoding with `model` (workloads/models/generation.py)."""

    def generate(prompts: list[list[int]], budget: int) -> list[list[int]]:
        return greedy_ids(model, prompts, budget, stops, batch_size)

    return generate


def run_infill(
    model: Transformer,
    tokenizer: Tokenizer,
    sentinels: Sentinels,
    docs: list[str],
    seed: int,
    n: int,
    batch_size: int,
    max_middle: int = DEFAULT_MAX_MIDDLE,
) -> dict[str, float]:
    """Infilling scores of `model` on `n` spans cut from `docs` (seeded)."""
    room = model.arch.max_seq_len - max_middle - 4  # 3 sentinels in, the end marker out
    context = max(1, min(DEFAULT_CONTEXT, room // 2))
    items = make_items(docs, tokenizer, seed, n, max_middle, context)
    stops = {sentinels.end, tokenizer.eos_id}
    return score_infill(model_generator(model, stops, batch_size), items, sentinels)
