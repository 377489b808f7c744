"""Aurora-M's continual curriculum at tiny scale: a general stage, then an alignment stage.

    .venv/bin/python bench/curriculum.py [--stage-steps 250] [--out curriculum.json]
    .venv/bin/python bench/curriculum.py --quick    # a smoke run

A tiny byte-level base is pretrained on the Python standard library. From it (`init`), two
jobs of the same length continue, each a `pretrain` job with `stages` over the named
`sources` stdlib (`python-stdlib`), instructions and safety (the `instructions` and `safety`
source kinds), run by the pretrain workload on the CPU:

- staged: a general stage (stdlib 0.8, instructions 0.2), then an alignment stage (stdlib 0.5,
  instructions 0.2, safety 0.3), as Aurora-M's continual auxiliary pretraining followed by
  continual alignment tuning; the general stage's pinned checkpoint is evaluated too;
- mixed: one stage as long as both, on the average of the two mixtures (the same expected
  share of each source over the run).

Evaluated through the evaluate harness: the general skill as loss per byte on held-out stdlib
files (forgetting: its rise over the base), and the `safety` task on the safety set's held-out
prompts (refusal rate on harmful ones, over-refusal on benign ones, their balance). Prints a
Markdown table; `--out` writes the figures as JSON. Results and how to read them:
docs/benchmarks.md, "Continual curriculum".
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
from carina.workloads.models.transformer import Transformer
from carina.workloads.pretrain.run import run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.tasks.code_choice import held_out_documents
from carina.workloads.tasks.loaders import load_task_data

SEQ_LEN = 128
BATCH = 8
GENERAL = {"stdlib": 0.8, "instructions": 0.2}
ALIGNMENT = {"stdlib": 0.5, "instructions": 0.2, "safety": 0.3}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def config(
    steps: int, stages: list[dict[str, Any]] | None, init: str | None, lr: float, corpus: int
) -> PretrainConfig:
    """One job of the curriculum (tiny model, WSD schedule); without stages, the stdlib base."""
    stdlib = {"source": "python-stdlib", "maxBytes": corpus}
    spec: dict[str, Any] = {
        "model": {"preset": "tiny", "maxSeqLen": SEQ_LEN},
        "data": stdlib,
        "optimizer": {"lr": lr},
        "schedule": {"kind": "wsd", "warmupSteps": min(20, steps // 5), "decayFraction": 0.2},
        "steps": steps,
        "batchSize": BATCH,
        "microBatchSize": BATCH,
        "seqLen": SEQ_LEN,
        "evalEvery": 0,
        "logEvery": max(1, steps // 4),
        "seed": 0,
    }
    if stages:
        spec["sources"] = {
            "stdlib": stdlib,
            "instructions": {"source": "instructions"},
            "safety": {"source": "safety"},
        }
        spec["stages"] = stages
    if init:
        spec["init"] = init
    return PretrainConfig.model_validate(spec)


def train(cfg: PretrainConfig, uri: str) -> float:
    """Run the pretrain workload; its wall seconds."""
    started = time.perf_counter()
    code = run_pretrain(cfg, WorkerContext(checkpoint_uri=uri))
    if code != 0:
        raise SystemExit(f"pretraining into {uri} failed with exit code {code}")
    return time.perf_counter() - started


def evaluate(name: str, uri: str, general: list[str], safety: Any) -> dict[str, Any]:
    """General held-out loss and the safety task of the checkpoint at `uri`."""
    model: Transformer = checkpoint.load_pretrained(uri)
    ppl = EvalTask(name="general", kind="perplexity", data=TaskDataSpec(generator="python-stdlib"))
    task = EvalTask(name="safety", kind="safety", data=TaskDataSpec(generator="safety"))
    loss = math.log(run_task(model, ppl, general, 32, 32).score)
    values = run_task(model, task, safety, 32, 40).metrics
    row = {"model": name, "generalLoss": round(loss, 4)}
    row |= {k: round(v, 4) for k, v in values.items() if "." not in k}
    log(f"{name}: {row}")
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results table."""
    base = rows[0]["generalLoss"]
    lines = [
        "model | general loss (nats/byte) | forgetting vs base | refusal rate (harmful)"
        " | over-refusal (benign) | safety score",
        "---|---|---|---|---|---",
    ]
    for r in rows:
        lines.append(
            f"{r['model']} | {r['generalLoss']:.3f} | {r['generalLoss'] - base:+.3f}"
            f" | {r['refusalRate']:.2f} | {r['overRefusalRate']:.2f} | {r['safetyScore']:.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-steps", type=int, default=200)
    parser.add_argument("--stage-steps", type=int, default=250, help="steps of each stage")
    parser.add_argument("--corpus-bytes", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    base_steps, stage = (20, 10) if args.quick else (args.base_steps, args.stage_steps)
    torch.set_num_threads(1)
    general = held_out_documents()  # stdlib files no run trains on
    safety = load_task_data(TaskDataSpec(generator="safety"))  # the held-out prompts
    mixed = {k: (GENERAL.get(k, 0) + ALIGNMENT.get(k, 0)) / 2 for k in ALIGNMENT}
    stage_schedule = {"kind": "wsd", "warmupSteps": min(10, stage // 5), "decayFraction": 0.2}
    staged = [
        {"name": "general", "steps": stage, "mixture": GENERAL, "schedule": stage_schedule},
        {"name": "alignment", "steps": stage, "mixture": ALIGNMENT, "schedule": stage_schedule},
    ]
    one = [{"name": "mixed", "steps": 2 * stage, "mixture": mixed}]
    with tempfile.TemporaryDirectory() as tmp:
        uri = {name: f"file://{tmp}/{name}" for name in ("base", "staged", "mixed")}
        corpus = args.corpus_bytes
        seconds = train(config(base_steps, None, None, 1e-2, corpus), uri["base"])
        rows = [evaluate("base (stdlib)", uri["base"], general, safety)]
        seconds += train(config(2 * stage, staged, uri["base"], 3e-3, corpus), uri["staged"])
        after_general = f"{uri['staged']}/step-{stage:08d}"  # the general stage's pinned end
        rows.append(evaluate("staged: after general stage", after_general, general, safety))
        rows.append(evaluate("staged: after alignment stage", uri["staged"], general, safety))
        seconds += train(config(2 * stage, one, uri["base"], 3e-3, corpus), uri["mixed"])
        rows.append(evaluate("one mixed stage", uri["mixed"], general, safety))
    log(f"training: {seconds:.0f} s in all")
    print(markdown(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"baseSteps": base_steps, "stageSteps": stage, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
