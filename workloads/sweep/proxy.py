"""One proxy trial: the µP decoder trained for T tokens at batch β and peak lr η.

The step is pretraining's (`pretrain/run.py`) on one process: the same model, AdamW parameter
groups (hidden matrices at η/m_width), schedule function and data; the trial's warmup is
`warmupFraction` of its steps. Its score is the mean held-out loss after the final decay.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from carina.workloads.config import DataSpec, ScheduleSpec, SweepConfig
from carina.workloads.data import Corpus, ShardedSampler, build_corpus
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.runtime.schedules import learning_rate

_CORPORA: dict[str, Corpus] = {}  # a reused trial actor reads its corpus once
EVAL_BATCH = 16  # held-out sequences per batch: the same for every trial, whatever its β


def _corpus(data: DataSpec, seq_len: int, seed: int) -> Corpus:
    key = f"{data.model_dump_json()}|{seq_len}|{seed}"
    if key not in _CORPORA:
        _CORPORA[key] = build_corpus(data, seq_len, seed)
    return _CORPORA[key]


def trial_schedule(cfg: SweepConfig, steps: int) -> ScheduleSpec:
    """The config's schedule with this trial's warmup (a share of its steps)."""
    warmup = min(steps - 1, round(cfg.warmup_fraction * steps))
    return cfg.schedule.model_copy(update={"warmup_steps": warmup})


def train_proxy(
    cfg: SweepConfig,
    batch_size: int,
    tokens: int,
    lr: float,
    schedule: ScheduleSpec | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> float:
    """Train a fresh proxy model; the held-out loss after its last step (inf if it diverged)."""
    torch.set_flush_denormal(True)  # Adam's moments decay into slow denormals on x86
    try:
        return _train(cfg, batch_size, tokens, lr, schedule, model_overrides or {})
    finally:
        torch.set_flush_denormal(False)


def _train(
    cfg: SweepConfig,
    batch_size: int,
    tokens: int,
    lr: float,
    schedule: ScheduleSpec | None,
    model_overrides: dict[str, Any],
) -> float:
    seq = cfg.seq_len
    steps = max(1, tokens // (batch_size * seq))
    corpus = _corpus(cfg.data, seq, cfg.seed)
    spec = cfg.model.model_copy(update=model_overrides)
    arch = spec.resolve(vocab_size=corpus.tokenizer.vocab_size)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trial_gpus > 0 else "cpu")
    torch.manual_seed(cfg.seed)
    model = Transformer(arch).to(device)
    opt_cfg = cfg.optimizer
    optimizer = torch.optim.AdamW(
        param_groups(model, opt_cfg.weight_decay), lr=lr, betas=opt_cfg.betas, eps=opt_cfg.eps
    )
    sched = schedule or trial_schedule(cfg, steps)
    sampler = ShardedSampler(len(corpus.train), cfg.seed, 0, 1)
    model.train()
    for step in range(steps):
        base = learning_rate(step, sched, lr, steps, batch_size, seq)
        for group in optimizer.param_groups:
            group["lr"] = base * group["lr_scale"]
        x, y = corpus.train.batch(sampler.next_indices(batch_size))  # (β, seq) each
        x, y = x.to(device), y.to(device)
        _, loss = model(x, y)
        assert loss is not None
        if not torch.isfinite(loss):
            return math.inf
        loss.backward()
        if opt_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return held_out_loss(model, corpus, cfg.eval_batches)


@torch.no_grad()
def held_out_loss(model: Transformer, corpus: Corpus, batches: int) -> float:
    """Mean loss over the first `batches` held-out batches (the same windows for every trial)."""
    val = corpus.val if len(corpus.val) else corpus.train
    model.eval()
    losses = []
    for b in range(batches):
        x, y = val.batch([(b * EVAL_BATCH + j) % len(val) for j in range(EVAL_BATCH)])
        device = next(model.parameters()).device
        _, loss = model(x.to(device), y.to(device))
        assert loss is not None
        losses.append(float(loss))
    value = sum(losses) / len(losses)
    return value if math.isfinite(value) else math.inf
