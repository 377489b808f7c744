"""Fill-in-the-middle (FIM): a document cut in three and its middle moved to the end.

Bavarian et al. 2022 ("Efficient Training of Language Models to Fill in the Middle"), as the
Granite code models use it: with probability `rate` a training document is cut at two uniform
random points into prefix, middle and suffix, and laid out with sentinel tokens as

    PSM:  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle <fim_end>
    SPM:  <fim_suffix> suffix <fim_prefix> prefix <fim_middle> middle <fim_end>

(SPM with probability `spmRate`). A left-to-right model trained on these learns to write the
middle given both sides; at inference the prompt is the layout up to and including
<fim_middle>, and generation stops at <fim_end>. The cut is on token ids, so a tokenizer never
sees a sentinel's text: sentinels are ids no text encodes to.

Everything here is a pure function of token ids and a seed: the same seed and documents give
the same rearrangement on every rank and every restart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

# Sentinel names, as a tokenizers JSON file spells them (the byte tokenizer reserves ids).
FIM_TOKENS = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_end>")
# Keys each document's draw by (seed, document index): independent of the other documents.
_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Sentinels:
    """The four FIM token ids of one tokenizer."""

    prefix: int
    middle: int
    suffix: int
    end: int

    def ids(self) -> tuple[int, int, int, int]:
        return (self.prefix, self.middle, self.suffix, self.end)


def split_points(length: int, rng: random.Random) -> tuple[int, int]:
    """Two sorted cut points in [0, length], uniform (the middle may be empty)."""
    a, b = rng.randint(0, length), rng.randint(0, length)
    return (a, b) if a <= b else (b, a)


def prompt_ids(prefix: list[int], suffix: list[int], spm: bool, s: Sentinels) -> list[int]:
    """What the model reads before writing the middle: the layout up to <fim_middle>."""
    if spm:
        return [s.suffix, *suffix, s.prefix, *prefix, s.middle]
    return [s.prefix, *prefix, s.suffix, *suffix, s.middle]


def rearrange(ids: np.ndarray, cut: tuple[int, int], spm: bool, s: Sentinels) -> np.ndarray:
    """`ids` cut at `cut` = (i, j) into ids[:i], ids[i:j], ids[j:] and laid out PSM or SPM."""
    i, j = cut
    if not 0 <= i <= j <= len(ids):
        raise ValueError(f"cut points {cut} outside a document of {len(ids)} tokens")
    prefix, middle, suffix = ids[:i], ids[i:j], ids[j:]
    head = np.asarray(prompt_ids(prefix.tolist(), suffix.tolist(), spm, s), dtype=ids.dtype)
    return np.concatenate([head, middle, np.asarray([s.end], dtype=ids.dtype)])


def restore(ids: np.ndarray, s: Sentinels) -> np.ndarray:
    """The original document of a rearranged one (PSM or SPM); ValueError if not a FIM layout."""
    seq = ids.tolist()
    if len(seq) < 4 or seq[-1] != s.end or seq[0] not in (s.prefix, s.suffix):
        raise ValueError("not a fill-in-the-middle layout")
    spm = seq[0] == s.suffix
    second = s.prefix if spm else s.suffix
    k2 = seq.index(second, 1)
    k3 = seq.index(s.middle, k2 + 1)
    first_part, second_part, middle = seq[1:k2], seq[k2 + 1 : k3], seq[k3 + 1 : -1]
    prefix, suffix = (second_part, first_part) if spm else (first_part, second_part)
    return np.asarray(prefix + middle + suffix, dtype=ids.dtype)


def apply_fim(
    docs: list[np.ndarray], rate: float, spm_rate: float, seed: int, s: Sentinels
) -> list[np.ndarray]:
    """Each document rearranged with probability `rate` (SPM with `spmRate`), seeded per index."""
    if rate <= 0:
        return docs
    out = []
    for index, ids in enumerate(docs):
        rng = random.Random(seed * _SEED_STRIDE + index)
        if rng.random() >= rate:
            out.append(ids)
            continue
        spm = rng.random() < spm_rate
        out.append(rearrange(ids, split_points(len(ids), rng), spm, s))
    return out
