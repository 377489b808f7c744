"""The supervised fine-tuning step: masked cross-entropy on prompt/response batches.

Batches are drawn by the same resumable `ShardedSampler` as pretraining (state: sequences
consumed), the learning rate by the same schedules, and µP's per-group learning-rate scales
apply as in pretraining.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from carina.workloads.config import OptimizerSpec, ScheduleSpec
from carina.workloads.data import ByteTokenizer, HFTokenizer, ShardedSampler
from carina.workloads.finetune.masking import IGNORE, Pair, collate, encode_pair
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.runtime import distributed
from carina.workloads.runtime.schedules import learning_rate


def make_optimizer(model: Transformer, spec: OptimizerSpec) -> torch.optim.AdamW:
    """AdamW over µP parameter groups (each with its `lr_scale`)."""
    return torch.optim.AdamW(
        param_groups(model, spec.weight_decay), lr=spec.lr, betas=spec.betas, eps=spec.eps
    )


@dataclass(frozen=True)
class MicroBatch:
    """This rank's slice of one micro-batch of pairs."""

    inputs: torch.Tensor  # (B, T) token ids, right-padded
    labels: torch.Tensor  # (B, T) next tokens; IGNORE outside the responses
    lengths: tuple[int, ...]  # tokens of each row before padding

    @property
    def trained_tokens(self) -> int:
        """Positions the loss covers (the responses and their EOS)."""
        return int((self.labels != IGNORE).sum())


class PairBatches:
    """Encoded pairs and a resumable sampler over them (this rank's share of each micro-batch)."""

    def __init__(
        self,
        tokenizer: ByteTokenizer | HFTokenizer,
        pairs: list[Pair],
        max_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.encoded = [encode_pair(tokenizer, p, max_len) for p in pairs]
        self.pad_id = tokenizer.pad_id
        self.sampler = ShardedSampler(len(self.encoded), seed, rank, world_size)

    def next(self, global_micro_batch: int) -> MicroBatch:
        """This rank's slice of the next global micro-batch."""
        rows = [self.encoded[i] for i in self.sampler.next_indices(global_micro_batch)]
        inputs, labels = collate(rows, self.pad_id)
        return MicroBatch(inputs, labels, tuple(len(ids) for ids, _ in rows))


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[None]:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[MicroBatch],
    lr: float,
    grad_clip: float,
    bf16: bool = False,
) -> float:
    """One optimizer step, accumulated over `micro_batches`; returns the mean masked loss."""
    device = next(model.parameters()).device
    accumulation = len(micro_batches)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for k, batch in enumerate(micro_batches):
        inputs, labels = batch.inputs.to(device), batch.labels.to(device)
        with distributed.grad_sync(model, sync=k == accumulation - 1), _autocast(device, bf16):
            _, loss = model(inputs, labels)  # cross-entropy ignores the IGNORE labels
            assert loss is not None
            (loss / accumulation).backward()
        total += float(loss.detach())
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total / accumulation


def step_lr(step: int, schedule: ScheduleSpec, peak: float, steps: int, batch: int) -> float:
    """The schedule's base learning rate at `step` (seq_len only matters for `power`)."""
    return learning_rate(step, schedule, peak, steps, batch, seq_len=128)
