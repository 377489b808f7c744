"""Tokens/s and MFU of the ~350M preset in bf16 on one GPU: Carina's loop vs a plain loop.

    python bench/gpu_pretrain.py [--steps 40] [--micro-batch 8] [--seq-len 2048] [--no-compile]

Prepares a corpus from the standard library's source (no download), then runs, one after
the other in this process, (1) a minimal PyTorch loop and (2) the worker's `run_pretrain`,
both with the same model (`350m`: d 1024, 24 layers, 16 heads, SwiGLU, RoPE, µP), bf16
autocast, fused AdamW, torch.compile and gradient accumulation 2. Timing starts after a
warmup that covers compilation. MFU uses the PaLM formula of carina.workloads.flops
(6N + 12·L·d·T per token) against the card's dense bf16 peak (CARINA_PEAK_FLOPS overrides).
Takes a few minutes on an H100, most of it compilation.
"""

from __future__ import annotations

import argparse
import time

import torch
from pretrain_overhead import carina_tokens_per_second  # the same timing of the worker loop

from carina.workloads.config import PretrainConfig
from carina.workloads.data import build_corpus
from carina.workloads.flops import flops_per_token, mfu, peak_flops
from carina.workloads.model import Transformer, param_groups
from carina.workloads.schedules import learning_rate

WARMUP = 10  # optimizer steps before timing: compilation, autotuning, allocator


def make_config(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "model": {"preset": "350m"},
            "data": {"source": "python-stdlib", "maxBytes": 16_000_000},
            "steps": args.steps,
            "batchSize": 2 * args.micro_batch,
            "microBatchSize": args.micro_batch,
            "seqLen": args.seq_len,
            "evalEvery": 0,
            "logEvery": WARMUP,
            "precision": "bf16",
            "compile": args.compile,
            "schedule": {"kind": "wsd", "warmupSteps": max(1, args.steps // 8)},
        }
    )


def plain_loop(cfg: PretrainConfig, device: torch.device) -> float:
    """Tokens/s of a nanoGPT-style loop on the same model, data and optimizer."""
    corpus = build_corpus(cfg.data, cfg.seq_len, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model.resolve()).to(device)
    if cfg.compile:
        model.compile()
    opt = torch.optim.AdamW(
        param_groups(model, 0.1), lr=cfg.optimizer.lr, betas=(0.9, 0.95), fused=True
    )
    accum = cfg.batch_size // cfg.micro_batch_size
    g = torch.Generator().manual_seed(0)
    t0 = 0.0
    for step in range(cfg.steps):
        lr = learning_rate(
            step, cfg.schedule, cfg.optimizer.lr, cfg.steps, cfg.batch_size, cfg.seq_len
        )
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        for _ in range(accum):
            idx = torch.randint(len(corpus.train), (cfg.micro_batch_size,), generator=g)
            x, y = corpus.train.batch(idx.tolist())
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = model(x, y)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % WARMUP == 0:
            loss.item()  # the worker syncs at the same steps
            if step + 1 == WARMUP:
                t0 = time.perf_counter()
    torch.cuda.synchronize()
    tokens = (cfg.steps - WARMUP) * cfg.batch_size * cfg.seq_len
    del model, opt
    torch.cuda.empty_cache()
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_pretrain.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda", 0)
    cfg = make_config(args)
    arch = cfg.model.resolve()
    n_matmul = Transformer(arch).num_params(exclude_embedding=True)
    per_token = flops_per_token(n_matmul, arch, cfg.seq_len)
    peak = peak_flops(device)
    print(
        f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
        f"peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s bf16"
    )
    print(
        f"model: 350m, {n_matmul / 1e6:.0f}M matmul params, {per_token / 1e9:.2f} GFLOP/token; "
        f"batch {cfg.batch_size} x {cfg.seq_len} (micro {cfg.micro_batch_size}), "
        f"compile={cfg.compile}, {cfg.steps} steps, first {WARMUP} untimed"
    )
    plain = plain_loop(cfg, device)
    print(
        f"plain loop   {plain:10.0f} tokens/s  MFU {mfu(plain, per_token, peak, 1):6.1%}",
        flush=True,
    )
    carina = carina_tokens_per_second(cfg)
    print(f"carina loop  {carina:10.0f} tokens/s  MFU {mfu(carina, per_token, peak, 1):6.1%}")
    print(f"ratio carina/plain: {carina / plain:.3f}")


if __name__ == "__main__":
    main()
