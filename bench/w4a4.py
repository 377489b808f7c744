"""W4A4 with QAT and kurtosis regularization: a tiny model trained three ways, side by side.

    .venv/bin/python bench/w4a4.py [--finetune-steps 200] [--kurtosis-lambda 0.01] [--out w4a4.json]

Method (Nrusimha et al. 2024, arXiv 2404.03605; notes/techniques.md §3): one initialization,
one data order, three pretraining runs of the same tiny decoder on the Python standard
library's source:

- baseline: plain training; after it, activation clip values are calibrated (MSE-best range on
  calibration batches) and weights quantized by post-training quantization;
- qat: every block linear layer's input fake-quantized to 4 bits from step 0 (clip values
  calibrated at step 0, then learned);
- qat-kurtosis: qat plus λ·(mean output kurtosis of those layers) in the loss.

With `--finetune-steps N` the model is pretrained once (plainly, `--steps`) and the three ways
are N further steps from it (baseline: plain; qat and qat-kurtosis: what the `quantize`
workload does to a base checkpoint), so all three see the same tokens.

Then for each: 4-bit weight PTQ (RTN and GPTQ, per output channel) and held-out perplexity at
W16A16, W4A16 and W4A4 (every PTQ on its own copy of the trained model; GPTQ's Hessians come
from A16 inputs for the W4A16 figure and from A4 inputs for the W4A4 one), the W4A4 gap to
the run's own W16A16, the mean kurtosis of the quantized layers' inputs and outputs
(measured at W16A16), the largest max/median channel ratio of an input, and the mean weight
kurtosis (per output row, over inputs). A QAT model's W16A16 is the same weights with
activations left unquantized: a model trained under clipping need not be good without it, so
the table gives each W4A4 against the baseline's W16A16 too.
Prints a Markdown table; `--out` also writes the figures and the loss curves as JSON
(`--table-from` re-prints it, or the runs of several seeds as one table:
`--table-from s1234.json s7.json`); `--figures docs/figures` draws the three training-loss
curves into `w4a4-training-loss.png`.
About 3 minutes on 2 idle CPU cores at the defaults (2 with --finetune-steps 200); 10-30
when the cores are shared with other jobs.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from figures import save_curves

from carina.workloads.config import (
    KURTOSIS_LAMBDA,
    DataSource,
    DataSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
)
from carina.workloads.data import ShardedSampler, build_corpus
from carina.workloads.models.kurtosis import OutputKurtosis
from carina.workloads.models.quant_layers import (
    attach_quantizers,
    calibrate_clip_values,
    set_precision,
)
from carina.workloads.models.transformer import Transformer
from carina.workloads.quantize.ptq import quantize_model_weights
from carina.workloads.quantize.qat import build_optimizer, qat_step
from carina.workloads.quantize.report import evaluate_precisions
from carina.workloads.runtime.schedules import learning_rate

RUNS = ("baseline", "qat", "qat-kurtosis")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--clip-lr", type=float, default=1e-2)
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="pretrain once (--steps), then train the three ways as fine-tuning for this many",
    )
    p.add_argument("--finetune-lr", type=float, default=3e-3)
    p.add_argument("--kurtosis-lambda", type=float, default=KURTOSIS_LAMBDA)
    p.add_argument("--bits", type=int, default=4, help="weight and activation bits")
    p.add_argument("--group-size", type=int, default=0, help="weight group (0 = per channel)")
    p.add_argument("--max-bytes", type=int, default=4_000_000)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--calibration-batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="draw the training-loss curves into this folder (docs/figures by convention)",
    )
    p.add_argument(
        "--table-from", nargs="+", default=None, help="only print the table of JSON results"
    )
    return p.parse_args()


def train(
    run: str,
    args: argparse.Namespace,
    corpus: Any,
    calibration: list[torch.Tensor],
    steps: int,
    lr: float,
    init: dict[str, torch.Tensor] | None = None,
    consumed: int = 0,
) -> tuple[Transformer, float, list[tuple[int, float]]]:
    """Train one way from scratch (or from `init`, continuing the data stream at `consumed`).

    Returns the model (quantizers attached), the seconds it took and its cross-entropy per step.
    """
    torch.manual_seed(args.seed)
    spec = ModelSpec(
        preset="tiny", d_model=args.d_model, n_layers=args.layers, max_seq_len=max(args.seq_len, 64)
    )
    model = Transformer(spec.resolve())
    layers = attach_quantizers(model, args.bits)
    if init is not None:
        model.load_state_dict(init)
    qat = run != "baseline"
    set_precision(model, quantize_weights=False, quantize_activations=qat)
    if qat:
        calibrate_clip_values(model, calibration)
    optimizer = build_optimizer(model, OptimizerSpec(lr=lr), args.clip_lr)
    schedule = ScheduleSpec(kind="wsd", warmup_steps=max(1, steps // 20), decay_fraction=0.2)
    sampler = ShardedSampler(len(corpus.train), args.seed, 0, 1)
    sampler.consumed = consumed
    hooks = OutputKurtosis(layers)
    lam = args.kurtosis_lambda if run == "qat-kurtosis" else 0.0
    t0 = time.perf_counter()
    curve: list[tuple[int, float]] = []
    for step in range(steps):
        x, y = corpus.train.batch(sampler.next_indices(args.batch_size))
        rate = learning_rate(step, schedule, lr, steps, args.batch_size, args.seq_len)
        result = qat_step(model, optimizer, x, y, lam, 1.0, rate, hooks)
        curve.append((step + 1, result.ce))
        if (step + 1) % max(1, steps // 8) == 0:
            print(
                f"  {run} step {step + 1}: ce {result.ce:.4f} kurtosis {result.kurtosis:.2f}",
                flush=True,
            )
    return model, time.perf_counter() - t0, curve


def measure(
    run: str,
    model: Transformer,
    args: argparse.Namespace,
    corpus: Any,
    calibration: list[torch.Tensor],
) -> dict[str, Any]:
    """PTQ and evaluation of one trained model.

    Each weight PTQ runs on its own copy of the model, so no method sees another's weights.
    RTN needs no calibration: one pass gives both W4A16 and W4A4. GPTQ calibrates twice, on
    the inputs each precision multiplies: A16 for W4A16, A4 for W4A4.
    """
    if run == "baseline":  # activation PTQ: clip values from calibration data
        calibrate_clip_values(model, calibration)
    out: dict[str, Any] = {"run": run}
    cpu = torch.device("cpu")
    b = args.bits
    passes = (("rtn", True, ("a16", "a4")), ("gptq", False, ("a16",)), ("gptq", True, ("a4",)))
    for method, a4_calibration, keep in passes:
        quantized = copy.deepcopy(model)
        quantize_model_weights(quantized, method, b, args.group_size, calibration, a4_calibration)
        ppl, layers, _ = evaluate_precisions(
            quantized,
            corpus.val,
            args.eval_batches * args.batch_size,
            args.batch_size,
            cpu,
            b,
            b,
        )
        keys = list(ppl)
        out["w16a16"] = ppl[keys[0]]
        if "a16" in keep:
            out[f"w{b}a16_{method}"] = ppl[keys[1]]
        if "a4" in keep:
            out[f"w{b}a{b}_{method}"] = ppl[keys[2]]
        n = len(layers)
        out["inputKurtosis"] = sum(s["inputKurtosis"] for s in layers.values()) / n
        out["outputKurtosis"] = sum(s["outputKurtosis"] for s in layers.values()) / n
        out["maxInputMaxMedianRatio"] = max(s["inputMaxMedianRatio"] for s in layers.values())
        out["weightKurtosis"] = sum(s["weightKurtosis"] for s in layers.values()) / n
        out["layers"] = layers
    return out


def table(results: list[dict[str, Any]], bits: int) -> str:
    """The Markdown table of docs/benchmarks.md; gaps are of W{b}A{b} with GPTQ weights.

    Each run is compared with the baseline of its own seed.
    """
    b = bits
    reference = {r.get("seed"): r["w16a16"] for r in results if r["run"] == "baseline"}
    lines = [
        f"| run | seed | W16A16 ppl | W{b}A16 ppl (RTN / GPTQ) | W{b}A{b} ppl (RTN / GPTQ) | "
        f"W{b}A{b} vs own W16A16 | W{b}A{b} vs baseline W16A16 | input kurtosis | "
        "output kurtosis | max input max/median | weight kurtosis |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        wa = r[f"w{b}a{b}_gptq"]
        ref = reference[r.get("seed")]
        lines.append(
            f"| {r['run']} | {r.get('seed', '')} | {r['w16a16']:.3f} | {r[f'w{b}a16_rtn']:.3f} / "
            f"{r[f'w{b}a16_gptq']:.3f} | {r[f'w{b}a{b}_rtn']:.3f} / {wa:.3f} | "
            f"{100 * (wa / r['w16a16'] - 1):+.1f}% | {100 * (wa / ref - 1):+.1f}% | "
            f"{r['inputKurtosis']:.2f} | {r['outputKurtosis']:.2f} | "
            f"{r['maxInputMaxMedianRatio']:.1f} | {r['weightKurtosis']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.table_from:
        results: list[dict[str, Any]] = []
        for path in args.table_from:
            with open(path) as f:
                saved = json.load(f)
            results += [{"seed": saved["args"]["seed"], **r} for r in saved["results"]]
        print(table(results, saved["args"]["bits"]))
        return
    torch.set_num_threads(args.threads)
    data = DataSpec(source=DataSource.PYTHON_STDLIB, max_bytes=args.max_bytes, val_fraction=0.05)
    corpus = build_corpus(data, args.seq_len, args.seed)
    cal_sampler = ShardedSampler(len(corpus.train), args.seed + 1, 0, 1)
    calibration = [
        corpus.train.batch(cal_sampler.next_indices(args.batch_size))[0]
        for _ in range(args.calibration_batches)
    ]
    print(
        f"train windows {len(corpus.train)}, held-out windows {len(corpus.val)}; "
        f"{args.steps} steps x {args.batch_size} x {args.seq_len} tokens",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    t_start = time.perf_counter()
    init, consumed = None, 0
    if args.finetune_steps:  # one pretrained model, then three ways of fine-tuning it
        base, seconds, _ = train("baseline", args, corpus, calibration, args.steps, args.lr)
        print(f"pretrained in {seconds:.0f} s", flush=True)
        init = {k: v.detach().clone() for k, v in base.state_dict().items()}
        consumed = args.steps * args.batch_size
    for run in RUNS:
        if init is None:
            model, seconds, curve = train(run, args, corpus, calibration, args.steps, args.lr)
        else:
            model, seconds, curve = train(
                run,
                args,
                corpus,
                calibration,
                args.finetune_steps,
                args.finetune_lr,
                init,
                consumed,
            )
        curves[run] = curve
        r = measure(run, model, args, corpus, calibration)
        r["seed"] = args.seed
        r["trainSeconds"] = round(seconds, 1)
        results.append(r)
        print(
            f"{run}: trained in {seconds:.0f} s; W16A16 {r['w16a16']:.3f}, "
            f"W{args.bits}A{args.bits} GPTQ {r[f'w{args.bits}a{args.bits}_gptq']:.3f}",
            flush=True,
        )
    print()
    print(table(results, args.bits))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\n{machine}; total {time.perf_counter() - t_start:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            saved_args = {**vars(args), "figures": args.figures and str(args.figures)}
            out = {"args": saved_args, "machine": machine, "results": results, "curves": curves}
            json.dump(out, f, indent=1)
    if args.figures:
        print(f"figure: {draw_curves(curves, args)}")


def draw_curves(curves: dict[str, list[tuple[int, float]]], args: argparse.Namespace) -> Path:
    """The three ways' training cross-entropy, step by step, as one PNG in `args.figures`."""
    phase = f"{args.finetune_steps} fine-tuning steps" if args.finetune_steps else "pretraining"
    return save_curves(
        args.figures / "w4a4-training-loss.png",
        curves,
        title=f"W{args.bits}A{args.bits}: training loss by method ({phase}, seed {args.seed})",
        x_label="step",
        y_label="cross-entropy (quantized forward for QAT)",
    )


if __name__ == "__main__":
    main()
