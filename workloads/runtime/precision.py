"""Which dtype a workload's forward passes autocast to."""

from __future__ import annotations

import torch

from carina.workloads.config import Precision


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """bf16 under `auto` on GPUs and under `bf16` anywhere; None means plain fp32."""
    p = Precision(precision)
    if p == Precision.BF16 or (p == Precision.AUTO and device.type == "cuda"):
        return torch.bfloat16
    return None
