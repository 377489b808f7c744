"""Builders shared by the workload tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carina.workloads.config import PretrainConfig


def tiny_config(**overrides: Any) -> PretrainConfig:
    """A tiny pretraining run on synthetic data (seconds on one CPU core)."""
    doc: dict[str, Any] = {
        "model": {"preset": "tiny"},
        "data": {"source": "synthetic", "valFraction": 0.05},
        "steps": 20,
        "batchSize": 8,
        "microBatchSize": 4,
        "seqLen": 32,
        "evalEvery": 0,
        "schedule": {"kind": "wsd", "warmupSteps": 3},
        "seed": 7,
    }
    doc.update(overrides)
    return PretrainConfig.model_validate(doc)


def write_spec(path: Path, config: PretrainConfig, kind: str = "pretrain") -> Path:
    """The CARINA_SPEC file for `config`."""
    path.write_text(json.dumps({"kind": kind, "config": config.to_wire()}))
    return path
