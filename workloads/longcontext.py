"""Long-context evaluation: loss by position in the window, and passkey retrieval by length.

- Loss by position bucket: the held-out next-token loss averaged over the tokens of each
  equal slice of the window ([0, T/k), [T/k, 2T/k) ...). A model that uses its context has a
  lower loss late in the window; one that does not handle positions past its training length
  (RoPE angles it never saw) has a higher one there.
- Passkey retrieval (Mohtashami & Jaggi 2023, as the Granite long-context report uses it): a
  five-digit key stated once inside repeated filler text, at a depth from 0 (the start) to 1
  (just before the question), and the question at the end. Scored teacher-forced: the key's
  digits are right when the model's most likely next token is each digit in turn, so
  `exact` is exactly whether greedy decoding would answer the key. Lengths are multiples of a
  base context (1x, 2x, 4x, 8x the length trained first), as in the paper's comparison.

Both work with any causal LM that maps (B, T) ids to (B, T, V) logits (`Transformer`); the
rotary tables are extended to the longest length asked for. Chance level of a digit is about
0.1 for a model that has learned to answer with digits at all.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from carina.workloads.data import Tokenizer, Windows
from carina.workloads.models.transformer import Transformer
from carina.workloads.passkey import FILLER_SENTENCES, KEY_DIGITS, QUESTION, needle, random_key


@dataclass(frozen=True)
class BucketLoss:
    """Mean next-token loss over the positions [start, end) of the window."""

    start: int
    end: int
    loss: float


@dataclass(frozen=True)
class RetrievalScore:
    """Passkey retrieval at one length: share of keys answered whole, and of their digits."""

    length: int
    factor: float  # length over the base context
    exact: float
    digit_accuracy: float
    trials: int


def _extend_rope(model: Transformer, length: int) -> None:
    if model.rope_cos.shape[0] < length:
        model.set_rope(model.arch.rope_theta, max_len=length)


@torch.no_grad()
def loss_by_position(
    model: Transformer,
    windows: Windows,
    buckets: int = 8,
    max_windows: int = 16,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> list[BucketLoss]:
    """Held-out loss per position bucket, over the first `max_windows` windows in order."""
    count = min(len(windows), max_windows)
    if count == 0:
        raise ValueError(f"no held-out window of {windows.seq_len + 1} tokens to evaluate")
    length = windows.seq_len
    if buckets < 1 or buckets > length:
        raise ValueError(f"buckets must be between 1 and the window length {length}")
    _extend_rope(model, length)
    was_training = model.training
    model.eval()
    total = torch.zeros(length, dtype=torch.float64)
    for first in range(0, count, batch_size):
        x, y = windows.batch(list(range(first, min(first + batch_size, count))))
        logits, _ = model(x.to(device))  # (B, T, V)
        per_token = F.cross_entropy(
            logits.float().transpose(1, 2), y.to(device), reduction="none"
        )  # (B, T)
        total += per_token.sum(0).double().cpu()
    model.train(was_training)
    mean = total / count
    edges = [round(i * length / buckets) for i in range(buckets + 1)]
    return [BucketLoss(a, b, float(mean[a:b].mean())) for a, b in itertools.pairwise(edges)]


def passkey_prompt(
    tokenizer: Tokenizer, length: int, depth: float, key: str
) -> tuple[list[int], list[int]]:
    """(prompt ids of at most `length` tokens with the key at `depth`, the key's ids).

    The filler is whole sentences and the key's sentence goes in at the sentence boundary
    nearest `depth` of the filler.
    """
    stated = tokenizer.encode(needle(key))
    question = tokenizer.encode(QUESTION)
    answer = tokenizer.encode(key)
    room = length - len(stated) - len(question) - len(answer)
    if room < 0:
        raise ValueError(f"a passkey prompt needs more than {length} tokens")
    sentences = [tokenizer.encode(s) for s in FILLER_SENTENCES]
    filler: list[int] = []
    boundaries = [0]
    for i in range(room):  # at most `room` sentences fit
        sentence = sentences[i % len(sentences)]
        if len(filler) + len(sentence) > room:
            break
        filler.extend(sentence)
        boundaries.append(len(filler))
    cut = min(boundaries, key=lambda b: abs(b - depth * len(filler)))
    return filler[:cut] + stated + filler[cut:] + question, answer


@torch.no_grad()
def passkey_retrieval(
    model: Transformer,
    tokenizer: Tokenizer,
    base_length: int,
    factors: Sequence[float] = (1, 2, 4, 8),
    depths: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    keys_per_depth: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[RetrievalScore]:
    """Passkey retrieval at `base_length` times each factor, keys at each depth."""
    lengths = [round(base_length * f) for f in factors]
    _extend_rope(model, max(lengths))
    was_training = model.training
    model.eval()
    rng = random.Random(seed)
    scores = []
    for factor, length in zip(factors, lengths, strict=True):
        exact = digits = trials = 0
        for depth in depths:
            for _ in range(keys_per_depth):
                key = random_key(rng)
                prompt, answer = passkey_prompt(tokenizer, length, depth, key)
                ids = torch.tensor([prompt + answer[:-1]], device=device)
                logits, _ = model(ids)  # (1, T, V)
                guessed = logits[0, len(prompt) - 1 :].argmax(-1).tolist()
                right = sum(int(g == a) for g, a in zip(guessed, answer, strict=True))
                digits += right
                exact += int(right == len(answer))
                trials += 1
        scores.append(
            RetrievalScore(
                length, float(factor), exact / trials, digits / (trials * KEY_DIGITS), trials
            )
        )
    model.train(was_training)
    return scores


@dataclass(frozen=True)
class LongContextReport:
    """Both evaluations of one model."""

    seq_len: int
    rope_theta: float
    position_loss: list[BucketLoss]
    retrieval: list[RetrievalScore]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase as the rest of Carina's reports."""
        return {
            "seqLen": self.seq_len,
            "ropeTheta": self.rope_theta,
            "positionLoss": [asdict(b) for b in self.position_loss],
            "retrieval": [
                {
                    "length": r.length,
                    "factor": r.factor,
                    "exact": r.exact,
                    "digitAccuracy": r.digit_accuracy,
                    "trials": r.trials,
                }
                for r in self.retrieval
            ],
        }


def evaluate_long_context(
    model: Transformer,
    tokenizer: Tokenizer,
    held_out: Windows,
    base_length: int,
    factors: Sequence[float] = (1, 2, 4, 8),
    buckets: int = 8,
    keys_per_depth: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LongContextReport:
    """Loss by position on `held_out` windows and passkey retrieval at each factor."""
    return LongContextReport(
        held_out.seq_len,
        model.arch.rope_theta,
        loss_by_position(model, held_out, buckets, device=device),
        passkey_retrieval(
            model,
            tokenizer,
            base_length,
            factors,
            keys_per_depth=keys_per_depth,
            seed=seed,
            device=device,
        ),
    )
