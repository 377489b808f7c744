"""SSR vs SFT at small scale: what fine-tuning costs a tiny base, with and without self-rehearsal.

    .venv/bin/python bench/ssr_vs_sft.py [--out ssr.json] [--base-cache base.pt]
    .venv/bin/python bench/ssr_vs_sft.py --quick    # a smoke run in under a minute

From one tiny byte-level base pretrained on the Python standard library plus QA transcripts
(answers in their non-canonical surface forms, no abstentions), fine-tune on grounded QA with
unanswerable questions (gold: canonical forms and "unanswerable") by SFT and by SSR (rule
judge), for several seeds. Measured: the target task (refusal F1, answer accuracy) and the
held-out suite the base learned in pretraining (code-choice accuracy on held-out stdlib files,
stdlib perplexity), as the relative drop against the base. Each fine-tuning run is the
worker's own (`Finetuner` in the shared run loop, on the CPU, without checkpoints): the dataset
it builds, its steps and its losses. Prints a Markdown table; `--out` also writes the figures
as JSON. About 10 minutes on 2 idle CPU cores. Results and how to read
them: docs/benchmarks.md, "Fine-tuning: SSR vs SFT".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from carina.workloads.config import (
    DataSource,
    DataSpec,
    EvalTask,
    FinetuneConfig,
    ModelSpec,
    OptimizerSpec,
    TaskDataSpec,
)
from carina.workloads.contract import WorkerContext
from carina.workloads.data import ByteTokenizer, load_documents, split_documents
from carina.workloads.evaluate import metrics
from carina.workloads.evaluate.harness import TaskResult, run_task
from carina.workloads.finetune import ssr
from carina.workloads.finetune.run import Finetuner
from carina.workloads.finetune.trainer import make_optimizer
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.loop import StepRecord
from carina.workloads.runtime.storage import open_store
from carina.workloads.tasks import code_choice, grounded_qa


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark run."""

    corpus_bytes: int
    qa_docs: int
    pretrain_steps: int
    pretrain_batch: int
    train_examples: int
    finetune_steps: int
    test_examples: int
    choice_items: int
    seeds: int


FULL = Scale(3_000_000, 6000, 1500, 16, 512, 200, 200, 500, 3)
QUICK = Scale(400_000, 600, 60, 8, 32, 10, 24, 24, 2)
SEQ_LEN = 256
MODEL = ModelSpec(preset="tiny", max_seq_len=SEQ_LEN)
FT_OPTIMIZER = {"lr": 1e-3, "weightDecay": 0.0}
FT_SCHEDULE = {"kind": "cosine", "warmupSteps": 5}
FT_BATCH = 16
CPU = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
MAX_NEW_TOKENS = 24  # " unanswerable" is 13 bytes; answers are shorter


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pretraining_stream(scale: Scale, seed: int) -> tuple[torch.Tensor, list[str]]:
    """The base's token stream (stdlib train split + QA transcripts) and the held-out files."""
    spec = DataSpec(source=DataSource.PYTHON_STDLIB, max_bytes=scale.corpus_bytes)
    train_docs, held = split_documents(load_documents(spec, seed), spec.val_fraction)
    docs = [d.decode("utf-8", errors="replace") for d in train_docs]
    docs += grounded_qa.pretraining_documents(scale.qa_docs, seed=10_000 + seed)
    random.Random(seed).shuffle(docs)
    tok = ByteTokenizer()
    stream: list[int] = []
    for d in docs:
        stream += [*tok.encode(d), tok.eos_id]
    return torch.tensor(stream), [d.decode("utf-8", errors="replace") for d in held]


def pretrain(stream: torch.Tensor, scale: Scale, seed: int) -> Transformer:
    """Next-token pretraining on random windows of the stream (WSD schedule)."""
    torch.manual_seed(seed)
    model = Transformer(MODEL.resolve())
    opt = make_optimizer(model, OptimizerSpec(lr=1e-2))
    g = torch.Generator().manual_seed(seed)
    decay_from = int(0.8 * scale.pretrain_steps)
    model.train()
    for step in range(scale.pretrain_steps):
        warm = min(1.0, (step + 1) / 50)
        decay = min(1.0, (scale.pretrain_steps - step) / max(1, scale.pretrain_steps - decay_from))
        for group in opt.param_groups:
            group["lr"] = 1e-2 * warm * decay * group["lr_scale"]
        starts = torch.randint(0, len(stream) - SEQ_LEN - 1, (scale.pretrain_batch,), generator=g)
        rows = torch.stack([stream[s : s + SEQ_LEN + 1] for s in starts.tolist()])
        _, loss = model(rows[:, :-1], rows[:, 1:])
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == scale.pretrain_steps - 1:
            log(f"pretrain step {step} loss {loss.item():.3f}")
    return model


def suite(scale: Scale) -> list[tuple[EvalTask, Any]]:
    """The evaluation tasks (target first) with their data."""
    qa = EvalTask(
        name="grounded-qa",
        kind="refusal",
        target=True,
        data=TaskDataSpec(generator="grounded-qa", examples=scale.test_examples, seed=999),
    )
    code = EvalTask(name="code-choice", kind="multiple-choice", data=TaskDataSpec())
    ppl = EvalTask(name="stdlib-perplexity", kind="perplexity", data=TaskDataSpec())
    return [
        (qa, grounded_qa.generate(scale.test_examples, seed=999)),
        (code, None),
        (ppl, None),
    ]


def evaluate(model: Transformer, tasks: list[tuple[EvalTask, Any]]) -> list[TaskResult]:
    return [run_task(model, task, data, 32, MAX_NEW_TOKENS) for task, data in tasks]


def save_base(base: Transformer, folder: str) -> str:
    """The base as a checkpoint (what a fine-tuning job starts from); its URI."""
    uri = f"file://{folder}/base"
    optimizer = make_optimizer(base, OptimizerSpec())
    checkpoint.save(open_store(uri), 1, base, optimizer, {}, base.arch)
    return uri


def finetune_config(base_uri: str, mode: str, seed: int, scale: Scale) -> FinetuneConfig:
    """The fine-tuning job of one run: grounded QA with `seed`, the rule judge for SSR."""
    return FinetuneConfig.model_validate(
        {
            "base": base_uri,
            "mode": mode,
            "judge": {"kind": "rule"},
            "data": {"generator": "grounded-qa", "examples": scale.train_examples, "seed": seed},
            "optimizer": FT_OPTIMIZER,
            "schedule": FT_SCHEDULE,
            "steps": scale.finetune_steps,
            "batchSize": FT_BATCH,
            "microBatchSize": FT_BATCH,
            "maxNewTokens": MAX_NEW_TOKENS,
            "seed": seed,
            "precision": "fp32",
        }
    )


def run_mode(
    base_uri: str, mode: str, seed: int, scale: Scale, tasks: list[tuple[EvalTask, Any]]
) -> dict[str, Any]:
    """Fine-tune the base by `mode` with `seed` as the worker does; its records and results."""
    t0 = time.perf_counter()
    losses: list[float] = []

    def on_step(rec: StepRecord, _preempt: PreemptionFlag) -> None:
        losses.append(rec.loss)

    cfg = finetune_config(base_uri, mode, seed, scale)
    with contextlib.redirect_stdout(io.StringIO()):  # the worker's JSON event lines
        tuner = Finetuner(cfg, WorkerContext(), CPU, PreemptionFlag())
        try:
            tuner.run(on_step)
        finally:
            tuner.close()
    records, model = tuner.records, tuner.raw
    results = evaluate(model, tasks)
    log(
        f"{mode} seed {seed}: acceptance {ssr.acceptance_rate(records):.2f}, "
        f"first/last loss {losses[0]:.3f}/{losses[-1]:.3f}, "
        + ", ".join(f"{r.name} {r.score:.4g}" for r in results)
        + f" ({time.perf_counter() - t0:.0f}s)"
    )
    return {
        "acceptance": ssr.acceptance_rate(records),
        "firstLoss": losses[0],
        "lastLoss": losses[-1],
        "results": [r.to_json() for r in results],
    }


def summarize(base: list[TaskResult], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per mode: mean and spread of target F1, answer accuracy and the held-out drop."""
    out: dict[str, Any] = {}
    for mode, mode_runs in runs.items():
        f1, acc, drops, per_task = [], [], [], {}
        for run in mode_runs:
            res = run["results"]
            f1.append(res[0]["metrics"]["f1"])
            acc.append(res[0]["metrics"]["answerAccuracy"])
            task_drops = [
                metrics.relative_drop(b.score, r["score"], b.higher_is_better)
                for b, r in zip(base[1:], res[1:], strict=True)
            ]
            for b, d in zip(base[1:], task_drops, strict=True):
                per_task.setdefault(b.name, []).append(d)
            drops.append(metrics.mean(task_drops))
        out[mode] = {
            "targetF1": metrics.mean_and_std(f1),
            "answerAccuracy": metrics.mean_and_std(acc),
            "averageDrop": metrics.mean_and_std(drops),
            "taskDrops": {k: metrics.mean_and_std(v) for k, v in per_task.items()},
            "acceptance": metrics.mean_and_std([r["acceptance"] for r in mode_runs]),
        }
    return out


def markdown(base: list[TaskResult], summary: dict[str, Any], seeds: int) -> str:
    def pm(x: tuple[float, float], pct: bool = False) -> str:
        return f"{100 * x[0]:.1f} ± {100 * x[1]:.1f}%" if pct else f"{x[0]:.3f} ± {x[1]:.3f}"

    lines = [
        f"| | target F1 (refusal) | answer accuracy | avg drop, held-out | "
        f"{' | '.join(f'drop {t.name}' for t in base[1:])} | SSR acceptance |",
        "|---|---:|---:|---:|" + "---:|" * (len(base) - 1) + "---:|",
        f"| base | {base[0].metrics['f1']:.3f} | {base[0].metrics['answerAccuracy']:.3f} | - | "
        + " | ".join(f"({t.metric} {t.score:.4g})" for t in base[1:])
        + " | - |",
    ]
    for mode, s in summary.items():
        lines.append(
            f"| {mode.upper()} ({seeds} seeds) | {pm(s['targetF1'])} | {pm(s['answerAccuracy'])} "
            f"| {pm(s['averageDrop'], True)} | "
            + " | ".join(pm(v, True) for v in s["taskDrops"].values())
            + f" | {pm(s['acceptance']) if mode == 'ssr' else '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny sizes)")
    parser.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--base-cache", type=Path, default=None, help="save the base here, or reuse it if there"
    )
    args = parser.parse_args()
    # One thread: on a shared 2-core machine torch's thread pool oversubscribes badly.
    torch.set_num_threads(1)
    scale = QUICK if args.quick else FULL
    seeds = args.seeds or scale.seeds
    t0 = time.perf_counter()
    stream, held_out = pretraining_stream(scale, seed=0)
    log(f"pretraining stream: {len(stream)} tokens, {len(held_out)} held-out files")
    if args.base_cache and args.base_cache.exists():
        base = Transformer(MODEL.resolve())
        base.load_state_dict(torch.load(args.base_cache, weights_only=True))
        log(f"base loaded from {args.base_cache}")
    else:
        base = pretrain(stream, scale, seed=0)
        if args.base_cache:
            torch.save(base.state_dict(), args.base_cache)
    tasks = suite(scale)
    tasks[1] = (tasks[1][0], code_choice.generate(held_out, scale.choice_items, seed=7))
    tasks[2] = (tasks[2][0], held_out)
    base_results = evaluate(base, tasks)
    log("base: " + ", ".join(f"{r.name} {r.score:.4g} {r.metrics}" for r in base_results))
    runs: dict[str, list[dict[str, Any]]] = {"sft": [], "ssr": []}
    with tempfile.TemporaryDirectory() as folder:
        base_uri = save_base(base, folder)
        for seed in range(1, seeds + 1):
            for mode in ("sft", "ssr"):
                runs[mode].append(run_mode(base_uri, mode, seed, scale, tasks))
    summary = summarize(base_results, runs)
    table = markdown(base_results, summary, seeds)
    print(table)
    if args.out:
        figures = {
            "scale": scale.__dict__,
            "seeds": seeds,
            "base": [r.to_json() for r in base_results],
            "runs": runs,
            "summary": summary,
            "markdown": table,
            "seconds": time.perf_counter() - t0,
        }
        args.out.write_text(json.dumps(figures, indent=1))
    log(f"done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
