"""The supervised fine-tuning step: masked cross-entropy on prompt/response batches.

Shared by the `finetune` workload and the SSR-vs-SFT benchmark. Batches are drawn by the same
resumable `ShardedSampler` as pretraining (state: sequences consumed), the learning rate by
the same schedules, and µP's per-group learning-rate scales apply as in pretraining.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from carina.workloads import distributed
from carina.workloads.config import OptimizerSpec, ScheduleSpec
from carina.workloads.data import ByteTokenizer, HFTokenizer, ShardedSampler
from carina.workloads.finetune.masking import Pair, collate, encode_pair
from carina.workloads.model import Transformer, param_groups
from carina.workloads.schedules import learning_rate


def make_optimizer(model: Transformer, spec: OptimizerSpec) -> torch.optim.AdamW:
    """AdamW over µP parameter groups (each with its `lr_scale`)."""
    return torch.optim.AdamW(
        param_groups(model, spec.weight_decay), lr=spec.lr, betas=spec.betas, eps=spec.eps
    )


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

    def next(self, global_micro_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of this rank's slice of the next global micro-batch."""
        rows = self.sampler.next_indices(global_micro_batch)
        return collate([self.encoded[i] for i in rows], self.pad_id)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[None]:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    accumulation: int,
    lr: float,
    grad_clip: float,
    bf16: bool = False,
) -> float:
    """One optimizer step over `accumulation` micro-batches; returns the mean masked loss."""
    device = next(model.parameters()).device
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for k in range(accumulation):
        inputs, labels = next(micro_batches)
        inputs, labels = inputs.to(device), labels.to(device)
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


def finetune(
    model: Transformer,
    batches: PairBatches,
    optimizer: torch.optim.Optimizer,
    optimizer_spec: OptimizerSpec,
    schedule: ScheduleSpec,
    steps: int,
    batch_size: int,
    micro_batch_size: int,
    start_step: int = 0,
) -> list[float]:
    """A single-process run of `steps - start_step` steps; the losses (benchmarks, tests)."""
    accumulation = batch_size // micro_batch_size

    def micro() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield batches.next(micro_batch_size)

    it = micro()
    model.train()
    losses = []
    for step in range(start_step, steps):
        lr = step_lr(step, schedule, optimizer_spec.lr, steps, batch_size)
        losses.append(train_step(model, optimizer, it, accumulation, lr, optimizer_spec.grad_clip))
    return losses
