"""Tiny models and inputs shared by the quantize unit tests."""

from __future__ import annotations

import torch

from carina.workloads.config import ModelSpec
from carina.workloads.models.transformer import Transformer


def tiny_model(seed: int = 0, n_layers: int = 2, d_model: int = 32) -> Transformer:
    """A two-layer decoder small enough for a unit test."""
    torch.manual_seed(seed)
    spec = ModelSpec(
        preset="tiny",
        d_model=d_model,
        n_layers=n_layers,
        n_heads=2,
        n_kv_heads=2,
        max_seq_len=32,
        ffn_hidden=48,
    )
    return Transformer(spec.resolve())


def token_batch(batch: int = 4, length: int = 16, seed: int = 1) -> torch.Tensor:
    """(batch, length) byte tokens."""
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))
