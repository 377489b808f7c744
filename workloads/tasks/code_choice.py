"""Held-out general tasks the base learned in pretraining: its corpus's own held-out documents.

- `held_out_documents`: the documents the pretraining split keeps out of training (the same
  every-k-th rule as `data.split_documents`, so a base pretrained on the stdlib never saw them).
- `generate`: multiple-choice code completion, HellaSwag-style. The context is a few lines of a
  held-out file and the first half of the next line; the choices are that line's true ending
  and endings of other lines of similar length. A model that learned Python from its corpus
  ranks the true ending first by log-likelihood.
"""

from __future__ import annotations

import random

from carina.workloads.config import DataSource, DataSpec
from carina.workloads.data import load_documents, split_documents
from carina.workloads.tasks.types import ChoiceExample

# Enough of the stdlib for a few hundred items and a stable perplexity in seconds.
DEFAULT_CORPUS_BYTES = 4_000_000
CONTEXT_LINES = 4
MAX_CONTEXT_CHARS = 160
CHOICES = 4


def held_out_documents(
    spec: DataSpec | None = None, max_bytes: int = DEFAULT_CORPUS_BYTES
) -> list[str]:
    """Held-out documents of a pretraining corpus (the stdlib by default), as text."""
    spec = spec or DataSpec(source=DataSource.PYTHON_STDLIB, max_bytes=max_bytes)
    _, held = split_documents(load_documents(spec, seed=0), spec.val_fraction)
    return [d.decode("utf-8", errors="replace") for d in held]


def split_line(line: str) -> tuple[str, str]:
    """The line cut near the middle of its code, after a boundary (space, bracket, dot, =)."""
    indent = len(line) - len(line.lstrip())
    middle = indent + (len(line) - indent) // 2
    for k in range(middle, len(line) - 4):
        if line[k] in " ([.=,:":
            return line[: k + 1], line[k + 1 :]
    return line[:middle], line[middle:]


def _candidates(doc: str) -> list[tuple[str, str]]:
    """(context ending with a line's first half, that line's second half) pairs."""
    lines = doc.splitlines()
    out = []
    for i in range(CONTEXT_LINES, len(lines)):
        line = lines[i]
        previous = lines[i - CONTEXT_LINES : i]
        if len(line.strip()) >= 16 and len(line) <= 100 and any(c.strip() for c in previous):
            head, tail = split_line(line)
            context = ("\n".join(previous) + "\n" + head)[-MAX_CONTEXT_CHARS:]
            out.append((context, tail))
    return out


def generate(documents: list[str], n: int, seed: int) -> list[ChoiceExample]:
    """`n` items from `documents`: finish the line; distractors end lines of similar length."""
    rng = random.Random(seed)
    pool = [pair for doc in documents for pair in _candidates(doc)]
    if len(pool) < CHOICES:
        return []
    picks = rng.sample(pool, min(n, len(pool)))
    tails = sorted({tail for _, tail in pool}, key=lambda t: (len(t), t))  # no hash order
    lengths = [len(t) for t in tails]
    out = []
    for i, (context, tail) in enumerate(picks):
        # Distractors from the 40 endings nearest in length, so length alone gives nothing away.
        j = min(range(len(lengths)), key=lambda k: abs(lengths[k] - len(tail)))
        window = [t for t in tails[max(0, j - 20) : j + 20] if t != tail]
        choices = [tail, *rng.sample(window, min(CHOICES - 1, len(window)))]
        rng.shuffle(choices)
        out.append(ChoiceExample(context, tuple(choices), choices.index(tail), f"code-{seed}-{i}"))
    return out
