"""The kurtosis term's weight λ: what each λ does to a model pretrained with W4A4 QAT.

    .venv/bin/python bench/kurtosis_lambda.py [--steps 300] [--seed 1234] [--lambdas 0 1e-5 1e-2]

For each λ, the `pretrain` workload itself (its `qat` option: every block linear's input
fake-quantized to 4 bits from step 0, clip values calibrated then learned, loss CE + λ·Kurt)
trains the `tiny` preset on the standard library's source; then, on 8 held-out batches, the
mean and the largest per-layer output kurtosis of the quantized layers with activations in
floating point, and the perplexity at W16A4 (weights left in floating point). One JSON line
per λ. About 40 s per λ at the defaults on one idle core. Behind the default `kurtosisLambda`
(docs/quantization.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
import time

import torch

from carina.workloads.config import PretrainConfig
from carina.workloads.data import build_corpus
from carina.workloads.models.kurtosis import ActivationStats
from carina.workloads.models.quant_layers import quant_layers, set_precision
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.worker import WorkerContext

EVAL_BATCHES = 8


def measure(cfg: PretrainConfig, uri: str) -> dict[str, float]:
    """Output kurtosis (activations in floating point) and W16A4 perplexity, held out."""
    model = checkpoint.load_pretrained(uri).eval()
    val = build_corpus(cfg.data, cfg.seq_len, cfg.seed).val
    stats = ActivationStats(quant_layers(model))
    n = cfg.batch_size
    batches = [val.batch(list(range(i * n, (i + 1) * n))) for i in range(EVAL_BATCHES)]
    with torch.no_grad():
        set_precision(model, quantize_weights=False, quantize_activations=False)
        with stats.recording():
            for x, _ in batches:
                model(x)
        set_precision(model, quantize_weights=False, quantize_activations=True)
        loss = sum(float(model(x, y)[1]) for x, y in batches) / len(batches)
    kurt = [s["outputKurtosis"] for s in stats.summary().values()]
    return {
        "outputKurtosis": sum(kurt) / len(kurt),
        "maxLayerOutputKurtosis": max(kurt),
        "pplW16A4": math.exp(loss),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1e-5, 1e-3, 1e-2, 1e-1])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for lam in args.lambdas:
        cfg = PretrainConfig.model_validate(
            {
                "model": {"preset": "tiny"},
                "data": {"source": "python-stdlib", "maxBytes": 4_000_000, "valFraction": 0.05},
                "steps": args.steps,
                "batchSize": 16,
                "microBatchSize": 16,
                "seqLen": 128,
                "evalEvery": 0,
                "logEvery": 50,
                "seed": args.seed,
                "optimizer": {"lr": 1e-2},
                "schedule": {"kind": "wsd", "warmupSteps": args.steps // 20, "decayFraction": 0.2},
                "qat": {"activationBits": 4, "kurtosisLambda": lam},
            }
        )
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            uri = f"file://{tmp}"
            with contextlib.redirect_stdout(io.StringIO()):
                run_pretrain(cfg, WorkerContext(checkpoint_uri=uri))
            row = {"lambda": lam, "seed": args.seed, "steps": args.steps, **measure(cfg, uri)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
