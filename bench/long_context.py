"""Long-context continual pretraining: RoPE θ raised with the length, against a fixed θ.

    .venv/bin/python bench/long_context.py [--short-steps 1500] [--long-steps 100] [--seed 1234]
        [--keys-weight 3]

The Granite long-context recipe (Stallone et al. 2024, arXiv 2407.13739) in miniature: the
`pretrain` workload trains the `tiny` preset in two stages on one model, a short stage at
seqLen 128 and a long one at 512 (4x), on a mixture of the standard library packed by
repository and generated passkey documents (weights 1 : keys-weight; the passkey documents
give a model this small a retrieval skill to carry to longer contexts at all). Two variants
differ only in the long stage's RoPE base: raised 5x (10K -> 50K, the paper's 8K -> 32K
step) or left at 10K. Each final checkpoint is then evaluated with
`carina.workloads.longcontext`: passkey retrieval at 1x, 2x, 4x and 8x the short context
(128 ... 1024 bytes; 8x is past anything trained) and held-out loss by position bucket of
stdlib windows at 4x and 8x. One JSON line per variant, then a table.
About 1.5 CPU-minutes per variant at the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from typing import Any

import torch

from carina.workloads.config import DataSpec, PretrainConfig
from carina.workloads.data import build_corpus
from carina.workloads.longcontext import loss_by_position, passkey_retrieval
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.worker import WorkerContext

SHORT, LONG = 128, 512
BASE_THETA = 10_000.0
VARIANTS = {"theta-schedule": 5 * BASE_THETA, "fixed-theta": BASE_THETA}
CODE = {"source": "python-stdlib", "packing": "repository", "maxBytes": 4_000_000}


def config(
    long_theta: float, short_steps: int, long_steps: int, seed: int, keys_weight: float
) -> PretrainConfig:
    """Two stages on one model; only the long stage's θ differs between variants."""
    return PretrainConfig.model_validate(
        {
            "model": {"preset": "tiny", "maxSeqLen": LONG, "ropeTheta": BASE_THETA},
            "sources": {"code": CODE, "keys": {"source": "passkey"}},
            "stages": [
                {
                    "name": "short",
                    "steps": short_steps,
                    "seqLen": SHORT,
                    "mixture": {"code": 1, "keys": keys_weight},
                },
                {
                    "name": "long",
                    "steps": long_steps,
                    "seqLen": LONG,
                    "ropeTheta": long_theta,
                    "mixture": {"code": 1, "keys": keys_weight},
                    "schedule": {"kind": "wsd", "warmupSteps": 5, "decayFraction": 0.2},
                },
            ],
            "batchSize": 8,
            "microBatchSize": 8,
            "seqLen": SHORT,
            "evalEvery": 0,
            "schedule": {"kind": "constant", "warmupSteps": 10},
            "optimizer": {"lr": 3e-3},
            "seed": seed,
        }
    )


def measure(uri: str, seed: int) -> dict[str, Any]:
    """Retrieval at 1x-8x the short context; loss by position at 4x and 8x, held out."""
    model = checkpoint.load_pretrained(uri).eval()
    tokenizer = build_corpus(DataSpec(source="passkey"), SHORT, seed).tokenizer
    retrieval = passkey_retrieval(model, tokenizer, SHORT, (1, 2, 4, 8), keys_per_depth=4)
    code = build_corpus(DataSpec.model_validate(CODE), LONG, seed)
    loss4 = loss_by_position(model, code.val, buckets=4, max_windows=16)
    loss8 = loss_by_position(model, code.with_seq_len(2 * LONG).val, buckets=8, max_windows=8)
    return {
        "ropeTheta": model.arch.rope_theta,
        "retrievalExact": {f"{r.factor:g}x": r.exact for r in retrieval},
        "retrievalDigits": {f"{r.factor:g}x": round(r.digit_accuracy, 3) for r in retrieval},
        "lossByPosition4x": [round(b.loss, 3) for b in loss4],
        "lossByPosition8x": [round(b.loss, 3) for b in loss8],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-steps", type=int, default=1500)
    parser.add_argument("--long-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--keys-weight", type=float, default=3.0, help="passkey : stdlib (1)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.variants:
        cfg = config(VARIANTS[name], args.short_steps, args.long_steps, args.seed, args.keys_weight)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as log:
                run_pretrain(cfg, WorkerContext(checkpoint_uri=f"file://{tmp}"))
            seconds = time.perf_counter() - t0
            steps = [json.loads(x) for x in log.getvalue().splitlines() if '"step"' in x]
            losses = [e["loss"] for e in steps if e.get("event") == "step"]
            final = f"file://{tmp}/step-{cfg.total_steps():08d}"
            row = {"variant": name, "trainSeconds": round(seconds, 1)}
            row["finalTrainLoss"] = round(sum(losses[-10:]) / len(losses[-10:]), 3)
            row.update(measure(final, args.seed))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| variant | θ long | exact 1x/2x/4x/8x | digits 1x/2x/4x/8x | loss 4x first/last |")
    print("|---|---|---|---|---|")
    for r in rows:
        exact = "/".join(f"{v:.2f}" for v in r["retrievalExact"].values())
        digits = "/".join(f"{v:.2f}" for v in r["retrievalDigits"].values())
        pos = r["lossByPosition4x"]
        print(f"| {r['variant']} | {r['ropeTheta']:g} | {exact} | {digits} | {pos[0]}/{pos[-1]} |")


if __name__ == "__main__":
    main()
