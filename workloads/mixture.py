"""Weighted sampling from several corpora: a stage's data mixture.

Global sequence k comes from source s(k), drawn from the normalized weights by a generator
seeded with (seed, k), so the choice depends on nothing but k. Each source is walked by its
own endless permutations (`ShardedSampler`'s rule, seeded per source), and the state is the
global count of sequences drawn plus each source's count, so a resumed run draws exactly the
sequences the uninterrupted one would have. As with `ShardedSampler`, every rank computes the
whole global micro-batch and keeps its slice, so the batches do not depend on the world size.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from carina.workloads.data import Corpus, ShardedSampler


class MixtureSampler:
    """Deterministic, resumable (source, window) draws by weight, sharded by rank."""

    def __init__(
        self, sizes: Sequence[int], weights: Sequence[float], seed: int, rank: int, world: int
    ) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("a mixture needs one weight per source and at least one source")
        total = float(sum(weights))
        self.cumulative = list(np.cumsum([w / total for w in weights]))
        self.cumulative[-1] = 1.0
        self.seed, self.rank, self.world = seed, rank, world
        self.sources = [
            ShardedSampler(n, seed * 31 + 7 * (i + 1), 0, 1) for i, n in enumerate(sizes)
        ]
        self.consumed = 0
        self.drawn = [0] * len(sizes)

    def source_of(self, k: int) -> int:
        """The source of global sequence `k`."""
        u = float(np.random.default_rng((self.seed, k)).random())
        return min(bisect.bisect_right(self.cumulative, u), len(self.cumulative) - 1)

    def next_picks(self, global_micro_batch: int) -> list[tuple[int, int]]:
        """This rank's (source, window) pairs of the next global micro-batch."""
        picks = []
        for j in range(global_micro_batch):
            s = self.source_of(self.consumed + j)
            picks.append((s, self.sources[s]._window(self.drawn[s])))
            self.drawn[s] += 1
        self.consumed += global_micro_batch
        per_rank = global_micro_batch // self.world
        return picks[self.rank * per_rank : (self.rank + 1) * per_rank]

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "drawn": list(self.drawn)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        drawn = [int(n) for n in state["drawn"]]
        if len(drawn) != len(self.drawn):
            raise ValueError(
                f"the checkpoint's mixture has {len(drawn)} sources, this stage {len(self.drawn)}"
            )
        self.consumed, self.drawn = int(state["consumed"]), drawn


@dataclass
class Mixture:
    """The corpora of one stage's sources, by name, and their weights."""

    names: list[str]
    corpora: list[Corpus]
    weights: list[float]

    def batch(self, picks: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of (source, window) picks, each (len(picks), seq_len)."""
        rows = []
        for s, w in picks:
            windows = self.corpora[s].train
            start = w * windows.seq_len
            rows.append(windows.stream[start : start + windows.seq_len + 1])
        stacked = torch.stack(rows)
        return stacked[:, :-1], stacked[:, 1:]
