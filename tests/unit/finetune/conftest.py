"""Tiny models and checkpoints for fine-tuning tests."""

from __future__ import annotations

import pytest
import torch

from carina.workloads.config import ModelSpec
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    arch = ModelSpec(preset="tiny", d_model=32, n_layers=1, n_heads=2, n_kv_heads=2).resolve()
    return Transformer(arch)


@pytest.fixture
def make_model():
    """A factory of tiny random models (seeded)."""
    return tiny_model


@pytest.fixture
def base_uri(tmp_path) -> str:
    """A complete checkpoint of a tiny random model."""
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    uri = f"file://{tmp_path}/base"
    checkpoint.save(open_store(uri), 1, model, opt, {"step": 1}, model.arch)
    return uri
