"""Technique figures: CLA's KV-cache bytes and DS-MoE's sparse-inference trade-off (CPU).

    .venv/bin/python bench/techniques.py [--moe-steps 300] [--seed 1234]

1. KV-cache bytes per token, MQA vs MQA-CLA2: from the architecture formula for the paper's
   H128-MQA 20-layer bf16 model (Brandon et al. 2024: 10,240 vs 5,120), and measured from the
   caches a small model allocates when it generates.
2. DS-MoE (Pan, Shen et al. 2024): a tiny 8-expert model trained densely with the MI loss on
   the standard library's source, then evaluated on held-out windows densely and sparsely
   (keep experts with E·S_i > ε, or top-k): active expert fraction, active-parameter fraction
   and the loss gap to dense; `--figures docs/figures` draws that trade-off as a PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import tempfile
from pathlib import Path

import torch
from figures import save_curves

from carina.workloads.config import ModelSpec, PretrainConfig
from carina.workloads.data import build_corpus
from carina.workloads.models.transformer import MoE, Sparsity, Transformer
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.worker import WorkerContext

THRESHOLDS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
TOP_K = (1, 2, 4)


def kv_cache_figures() -> None:
    print("## KV-cache bytes per token (bf16)")
    paper = {"d_model": 2048, "n_heads": 16, "n_kv_heads": 1, "n_layers": 20}
    for name, extra in (("H128-MQA", {}), ("H128-MQA-CLA2", {"cla_sharing": 2})):
        arch = ModelSpec(**paper, **extra).resolve()
        print(f"{name:16s} 20 layers, formula: {arch.kv_cache_bytes_per_token(2):6d} B/token")
    small = {"preset": "small", "n_kv_heads": 1, "n_layers": 4}
    for name, extra in (("small MQA", {}), ("small MQA-CLA2", {"cla_sharing": 2})):
        model = Transformer(ModelSpec(**small, **extra).resolve()).to(torch.bfloat16)
        caches = model.init_caches(1, 256)
        measured = sum(c.nbytes for c in caches) // 256
        formula = model.arch.kv_cache_bytes_per_token(2)
        print(f"{name:16s}  4 layers, allocated: {measured:6d} B/token (formula {formula})")


def moe_param_split(model: Transformer) -> tuple[int, int]:
    """(expert parameters, all other parameters)."""
    experts = sum(
        p.numel() for m in model.modules() if isinstance(m, MoE) for p in (m.w1, m.w2, m.w3)
    )
    return experts, model.num_params() - experts


@torch.no_grad()
def held_out_loss(model: Transformer, windows: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return sum(float(model(x, y)[1]) for x, y in windows) / len(windows)


def moe_figures(steps: int, seed: int) -> dict[str, list[tuple[float, float]]]:
    """Print the sparse-inference table; return held-out loss against active parameters."""
    print(
        f"\n## DS-MoE sparse inference (tiny, 8 experts in every layer, {steps} dense steps, "
        f"seed {seed})"
    )
    cfg = PretrainConfig.model_validate(
        {
            "model": {"preset": "tiny", "moe": {"experts": 8, "every": 1, "miAlpha": 4e-4}},
            "data": {"source": "python-stdlib", "maxBytes": 4_000_000, "valFraction": 0.05},
            "steps": steps,
            "batchSize": 16,
            "microBatchSize": 16,
            "seqLen": 128,
            "evalEvery": 0,
            "logEvery": 50,
            "schedule": {"kind": "wsd", "warmupSteps": 20},
            "seed": seed,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            run_pretrain(cfg, WorkerContext(checkpoint_uri=f"file://{tmp}"))
        model = checkpoint.load_pretrained(f"file://{tmp}").eval()
    assert isinstance(model, Transformer)
    val = build_corpus(cfg.data, cfg.seq_len, cfg.seed).val
    windows = [val.batch(list(range(i, i + 8))) for i in range(0, min(len(val), 64) - 7, 8)]
    experts, other = moe_param_split(model)
    dense = held_out_loss(model, windows)
    print(f"expert parameters: {experts} of {experts + other} ({experts / (experts + other):.0%})")
    print(
        f"{'inference':18s} {'experts kept':>12s} {'active params':>13s} "
        f"{'held-out loss':>13s} {'gap':>8s}"
    )
    print(f"{'dense':18s} {1.0:12.1%} {1.0:13.1%} {dense:13.4f} {0.0:+8.4f}")
    modes = [("threshold", f"threshold ε={t}", Sparsity(threshold=t)) for t in THRESHOLDS]
    modes += [("top-k", f"top-{k}", Sparsity(top_k=k)) for k in TOP_K]
    tradeoff: dict[str, list[tuple[float, float]]] = {"dense": [(100.0, dense)]}
    for family, name, sparsity in modes:
        model.set_moe_sparsity(sparsity)
        loss = held_out_loss(model, windows)
        kept = model.expert_active_fraction()
        active = (other + kept * experts) / (other + experts)
        print(f"{name:18s} {kept:12.1%} {active:13.1%} {loss:13.4f} {loss - dense:+8.4f}")
        tradeoff.setdefault(family, []).append((100 * active, loss))
    return {k: sorted(v) for k, v in tradeoff.items()}


def draw_tradeoff(tradeoff: dict[str, list[tuple[float, float]]], folder: Path) -> Path:
    """DS-MoE's held-out loss against the share of parameters active, one line per rule."""
    return save_curves(
        folder / "ds-moe-sparsity.png",
        tradeoff,
        title="DS-MoE sparse inference: held-out loss vs active parameters",
        x_label="active parameters (% of the dense model)",
        y_label="held-out cross-entropy",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moe-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234, help="initialization and data order")
    parser.add_argument(
        "--figures", type=Path, help="draw the DS-MoE trade-off into this folder (docs/figures)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}\n")
    kv_cache_figures()
    tradeoff = moe_figures(args.moe_steps, args.seed)
    if args.figures:
        print(f"figure: {draw_tradeoff(tradeoff, args.figures)}")


if __name__ == "__main__":
    main()
