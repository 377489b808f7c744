"""Tokens/s and MFU of the ~350M preset in bf16 on one GPU: Carina's loop vs a plain loop.

    python bench/gpu_pretrain.py [--steps 40] [--micro-batch 8] [--seq-len 2048] [--no-compile]
                                 [--preset 350m] [--json results.json]
    python bench/gpu_pretrain.py --preset tiny --steps 14 --micro-batch 2 --seq-len 64 \\
                                 --max-bytes 200000 --no-compile     # a CPU smoke run

Prepares a corpus from the standard library's source (no download), then runs, one after
the other in this process, (1) a minimal PyTorch loop and (2) the worker's `run_pretrain`,
both with the same model (`350m`: d 1024, 24 layers, 16 heads, SwiGLU, RoPE, µP), bf16
autocast, fused AdamW, torch.compile and gradient accumulation 2. Timing starts after a
warmup that covers compilation. MFU uses the PaLM formula of carina.workloads.runtime.flops
(6N + 12·L·d·T per token) against the card's dense bf16 peak (CARINA_PEAK_FLOPS overrides;
on a CPU there is no peak and MFU is null). `--json` writes the figures as one document.
Takes a few minutes on an H100, most of it compilation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from pretrain_overhead import carina_tokens_per_second  # the same timing of the worker loop

from carina.workloads.config import PretrainConfig
from carina.workloads.data import Corpus, build_corpus
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.runtime.flops import flops_per_token, mfu, peak_flops
from carina.workloads.runtime.schedules import learning_rate

WARMUP = 10  # optimizer steps before timing: compilation, autotuning, allocator


def make_config(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "model": {"preset": args.preset},
            "data": {"source": "python-stdlib", "maxBytes": args.max_bytes},
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(cfg: PretrainConfig, corpus: Corpus, device: torch.device) -> float:
    """Tokens/s of a nanoGPT-style loop on the same model, data and optimizer."""
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model.resolve(vocab_size=corpus.tokenizer.vocab_size)).to(device)
    if cfg.compile:
        model.compile()
    opt = torch.optim.AdamW(
        param_groups(model, 0.1),
        lr=cfg.optimizer.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
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
            with torch.autocast(device.type, dtype=torch.bfloat16):
                _, loss = model(x, y)
            assert loss is not None
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % WARMUP == 0:
            loss.item()  # the worker syncs at the same steps
            if step + 1 == WARMUP:
                t0 = time.perf_counter()
    loss.item()  # and at the last step
    sync(device)
    tokens = (cfg.steps - WARMUP) * cfg.batch_size * cfg.seq_len
    seconds = time.perf_counter() - t0
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return tokens / seconds


def peak_memory_gib(device: torch.device) -> float | None:
    """Most memory allocated since the last reset (GPU only), and reset it."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 2)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both loops, one after the other; the figures as a JSON-able document."""
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = make_config(args)
    corpus = build_corpus(cfg.data, cfg.seq_len, cfg.seed)
    arch = cfg.model.resolve(vocab_size=corpus.tokenizer.vocab_size)
    n_matmul = Transformer(arch).num_params(exclude_embedding=True)
    per_token = flops_per_token(n_matmul, arch, cfg.seq_len)
    peak = peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {name}, torch {torch.__version__}, "
        f"peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s bf16"
    )
    print(
        f"model: {args.preset}, {n_matmul / 1e6:.1f}M matmul params, "
        f"{per_token / 1e9:.2f} GFLOP/token; batch {cfg.batch_size} x {cfg.seq_len} "
        f"(micro {cfg.micro_batch_size}), compile={cfg.compile}, {cfg.steps} steps, "
        f"first {WARMUP} untimed",
        flush=True,
    )
    loops: dict[str, dict[str, float | None]] = {}
    tps = {}
    for loop in ("plain", "carina"):
        if loop == "plain":
            tps[loop] = plain_loop(cfg, corpus, device)
        else:
            tps[loop] = carina_tokens_per_second(cfg)
        util = mfu(tps[loop], per_token, peak, 1) if peak else None
        loops[loop] = {
            "tokensPerSecond": round(tps[loop], 1),
            "mfu": None if util is None else round(util, 4),
            "peakMemoryGiB": peak_memory_gib(device),
        }
        shown = "-" if util is None else f"{util:6.1%}"
        print(f"{loop:6s} loop  {tps[loop]:10.0f} tokens/s  MFU {shown}", flush=True)
    ratio = tps["carina"] / tps["plain"]
    print(f"ratio carina/plain: {ratio:.3f}")
    return {
        "device": name,
        "torch": torch.__version__,
        "peakFlops": peak,
        "preset": args.preset,
        "matmulParams": n_matmul,
        "flopsPerToken": per_token,
        "batchSize": cfg.batch_size,
        "microBatchSize": cfg.micro_batch_size,
        "seqLen": cfg.seq_len,
        "steps": cfg.steps,
        "untimedSteps": WARMUP,
        "compile": cfg.compile,
        "precision": "bf16",
        "plain": loops["plain"],
        "carina": loops["carina"],
        "ratioCarinaToPlain": round(ratio, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350m", help="model preset (tiny for a CPU run)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--max-bytes", type=int, default=16_000_000, help="corpus size")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must exceed the {WARMUP} untimed warmup steps")
    if not torch.cuda.is_available() and args.preset != "tiny":
        raise SystemExit("bench/gpu_pretrain.py needs a CUDA GPU (or --preset tiny on a CPU)")
    result = measure(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
