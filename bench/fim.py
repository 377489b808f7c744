"""Fill-in-the-middle rate: infilling gained against left-to-right loss given up.

    .venv/bin/python bench/fim.py [--steps 300] [--out fim.json]
    .venv/bin/python bench/fim.py --quick    # a smoke run in well under a minute

The same tiny byte-level model is pretrained on the Python standard library (the `pretrain`
workload itself, on the CPU) with `data.fim` at rate 0, 0.5 and 0.9 (SPM share 0.5; rate 0
keeps the FIM vocabulary of 264 so every run has the same parameters). Each result is
evaluated through the evaluate harness on held-out stdlib files the runs never saw:

- left-to-right: `perplexity` task, reported as loss per byte (nats);
- infilling: `infill` task, exact match of 1-8-byte middles (`--spans` of them, cut from those
  files) in PSM and SPM layouts.

Prints a Markdown table; `--out` also writes the figures as JSON. Results and how to read them:
docs/benchmarks.md, "Fill-in-the-middle rate".
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from typing import Any

import torch

from carina.workloads.config import EvalTask, PretrainConfig, TaskDataSpec
from carina.workloads.contract import WorkerContext
from carina.workloads.evaluate.harness import run_task
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.tasks.code_choice import held_out_documents

RATES = (0.0, 0.5, 0.9)
SEQ_LEN = 128
BATCH = 8


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pretrain_config(rate: float, steps: int, corpus_bytes: int) -> PretrainConfig:
    """The tiny run at FIM rate `rate` (everything else fixed)."""
    return PretrainConfig.model_validate(
        {
            "model": {"preset": "tiny", "maxSeqLen": SEQ_LEN},
            "data": {
                "source": "python-stdlib",
                "maxBytes": corpus_bytes,
                "fim": {"rate": rate, "spmRate": 0.5},
            },
            "optimizer": {"lr": 1e-2},
            "schedule": {"kind": "wsd", "warmupSteps": min(30, steps // 5), "decayFraction": 0.2},
            "steps": steps,
            "batchSize": BATCH,
            "microBatchSize": BATCH,
            "seqLen": SEQ_LEN,
            "evalEvery": 0,
            "logEvery": max(1, steps // 4),
            "seed": 0,
        }
    )


def run(
    rate: float, steps: int, corpus_bytes: int, eval_docs: list[str], spans: int
) -> dict[str, Any]:
    """Pretrain at `rate`, then left-to-right loss and infilling on held-out files."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"file://{tmp}/ckpt"
        started = time.perf_counter()
        code = run_pretrain(
            pretrain_config(rate, steps, corpus_bytes), WorkerContext(checkpoint_uri=uri)
        )
        seconds = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"pretraining at rate {rate} failed with exit code {code}")
        model = checkpoint.load_pretrained(uri)
    ppl = EvalTask(name="l2r", kind="perplexity", data=TaskDataSpec(generator="python-stdlib"))
    infill = EvalTask(
        name="infill",
        kind="infill",
        data=TaskDataSpec(generator="python-stdlib", examples=spans, seed=1),
    )
    l2r = run_task(model, ppl, eval_docs, batch_size=32, max_new_tokens=16)
    fill = run_task(model, infill, eval_docs, batch_size=32, max_new_tokens=16)
    out = {
        "rate": rate,
        "trainSeconds": round(seconds, 1),
        "l2rLoss": round(math.log(l2r.score), 4),
        **{k: round(v, 4) for k, v in fill.metrics.items()},
    }
    log(f"rate {rate}: {out}")
    return out


def markdown(rows: list[dict[str, Any]], steps: int) -> str:
    """The results table."""
    base = rows[0]["l2rLoss"]
    lines = [
        f"FIM rate | left-to-right loss (nats/byte) | vs rate 0 | infill EM PSM | infill EM SPM"
        f" | prefix match PSM | prefix match SPM ({steps} steps)",
        "---|---|---|---|---|---|---",
    ]
    for r in rows:
        lines.append(
            f"{r['rate']} | {r['l2rLoss']:.3f} | {100 * (r['l2rLoss'] - base) / base:+.1f}%"
            f" | {r['exactMatchPSM']:.3f} | {r['exactMatchSPM']:.3f}"
            f" | {r['prefixMatchPSM']:.3f} | {r['prefixMatchSPM']:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--corpus-bytes", type=int, default=2_000_000)
    parser.add_argument("--spans", type=int, default=128, help="infill spans per layout")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    steps, spans = (20, 16) if args.quick else (args.steps, args.spans)
    torch.set_num_threads(1)
    eval_docs = held_out_documents()  # stdlib files no run trains on
    rows = [run(rate, steps, args.corpus_bytes, eval_docs, spans) for rate in RATES]
    print(markdown(rows, steps))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"steps": steps, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
