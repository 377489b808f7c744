"""Carina's pretraining loop against a minimal plain-PyTorch loop, same model and data, CPU.

    .venv/bin/python bench/pretrain_overhead.py [--preset small] [--steps 40] [--repeats 3]

Both loops train the same `Transformer` on the same packed windows with the same AdamW
parameter groups, gradient accumulation, clipping and per-step LR. The Carina side runs the
whole worker (`run_pretrain` in the run loop every workload shares: sampler, schedule,
telemetry, progress, JSON logs, preemption check) without checkpoints. Tokens/s is measured
between logged steps after a warmup, both loops sync on the loss at the same steps, and the
runs alternate (A B A B ...) so machine load hits both alike; the figure is the median over
repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import time

import torch

from carina.workloads.config import PretrainConfig
from carina.workloads.data import build_corpus
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.loop import StepRecord
from carina.workloads.runtime.schedules import learning_rate
from carina.workloads.worker import WorkerContext

WARMUP = 10  # steps excluded from timing (allocator and kernel warm-up)


def make_config(preset: str, steps: int, seq_len: int) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "model": {"preset": preset},
            "data": {"source": "python-stdlib", "maxBytes": 4_000_000},
            "steps": steps,
            "batchSize": 16,
            "microBatchSize": 8,
            "seqLen": seq_len,
            "evalEvery": 0,
            "logEvery": WARMUP,
            "precision": "fp32",
        }
    )


def carina_tokens_per_second(cfg: PretrainConfig) -> float:
    """The worker's loop, timed between its logged steps after warmup."""
    marks: list[tuple[int, float]] = []

    def on_step(rec: StepRecord, _preempt: PreemptionFlag) -> None:
        marks.append((rec.step, time.perf_counter()))

    with contextlib.redirect_stdout(io.StringIO()):
        run_pretrain(cfg, WorkerContext(), on_step)
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return (s1 - s0) * cfg.batch_size * cfg.seq_len / (t1 - t0)


def plain_tokens_per_second(cfg: PretrainConfig) -> float:
    """A nanoGPT-style loop: random windows, forward, backward, clip, step."""
    corpus = build_corpus(cfg.data, cfg.seq_len, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model.resolve())
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=cfg.optimizer.lr, betas=(0.9, 0.95))
    accum = cfg.batch_size // cfg.micro_batch_size
    g = torch.Generator().manual_seed(0)
    t0 = 0.0
    for step in range(cfg.steps):
        lr = learning_rate(step, cfg.schedule, cfg.optimizer.lr, cfg.steps, 16, cfg.seq_len)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        for _ in range(accum):
            idx = torch.randint(len(corpus.train), (cfg.micro_batch_size,), generator=g)
            x, y = corpus.train.batch(idx.tolist())
            _, loss = model(x, y)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % WARMUP == 0:
            loss.item()  # the same sync points as the worker
            if step + 1 == WARMUP:
                t0 = time.perf_counter()
    return (cfg.steps - WARMUP) * cfg.batch_size * cfg.seq_len / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the worker does on CPU
    cfg = make_config(args.preset, args.steps, args.seq_len)
    carina, plain = [], []
    for _ in range(args.repeats):
        plain.append(plain_tokens_per_second(cfg))
        carina.append(carina_tokens_per_second(cfg))
    ratios = [c / p for c, p in zip(carina, plain, strict=True)]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"model: {args.preset}, batch 16 x {args.seq_len} tokens (2 micro-batches of 8), "
        f"{args.steps} steps, first {WARMUP} untimed, {args.repeats} repeats"
    )
    print(
        f"plain loop   tokens/s: {statistics.median(plain):10.0f}  "
        f"(runs: {', '.join(f'{x:.0f}' for x in plain)})"
    )
    print(
        f"carina loop  tokens/s: {statistics.median(carina):10.0f}  "
        f"(runs: {', '.join(f'{x:.0f}' for x in carina)})"
    )
    print(f"ratio carina/plain (median of paired runs): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
