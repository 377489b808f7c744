"""Tiny models, checkpoints and specs for fine-tuning tests (unit and integration)."""

from __future__ import annotations

import json
from pathlib import Path

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


def finetune_spec(tmp_path: Path, base: str, mode: str) -> str:
    """A CARINA_SPEC file: a 3-step fine-tuning run of `base` on 12 grounded QA examples."""
    config = {
        "base": base,
        "mode": mode,
        "data": {"generator": "grounded-qa", "examples": 12},
        "steps": 3,
        "batchSize": 4,
        "microBatchSize": 2,
        "maxNewTokens": 4,
        "schedule": {"kind": "constant", "warmupSteps": 0},
    }
    path = tmp_path / f"{mode}.json"
    path.write_text(json.dumps({"kind": "finetune", "config": config}))
    return str(path)
