"""The `evaluate` workload: `run_evaluate(config, context)` -> ExitCode.

Launch (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/eval python -m carina.workloads

with spec {"kind": "evaluate", "config": {"base": ..., "compareTo": ..., "tasks": [...]}}.
Rank 0 evaluates `base` (and `compareTo`) on every task and writes `report.json` and
`report.md` under CARINA_CHECKPOINT_URI; other ranks have nothing to do and exit at once.
The run is short and idempotent, so a restart simply runs it again.

Either model may be a training checkpoint (run as trained: W16A16, or W16A4 when pretrained
with `qat`) or a quantize job's packed result, `<its checkpoint URI>/quantized` (what
`job://<quantize job>` resolves to): that one runs as stored, int4 weights dequantized and
activations fake-quantized with the stored clip values (W4A4). The report names each
model's precision, so `base: job://<quantize job>` with `compareTo: job://<its base>` gives
the drop quantization cost.
"""

from __future__ import annotations

import json
import sys

import torch

from carina.workloads.config import EvaluateConfig, ExitCode
from carina.workloads.contract import WorkerContext
from carina.workloads.evaluate.harness import TaskResult, run_task
from carina.workloads.evaluate.report import compare, render_markdown
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint, packed
from carina.workloads.runtime.storage import open_store
from carina.workloads.runtime.telemetry import log_event
from carina.workloads.tasks.loaders import TaskData, load_task_data

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def evaluate_suite(
    model: Transformer, cfg: EvaluateConfig, data: dict[str, TaskData]
) -> list[TaskResult]:
    """Every task of `cfg` on `model`."""
    results = []
    for task in cfg.tasks:
        r = run_task(model, task, data[task.name], cfg.batch_size, cfg.max_new_tokens)
        log_event("task", name=r.name, metric=r.metric, score=round(r.score, 5), n=r.n)
        results.append(r)
    return results


def load_model(uri: str, device: str) -> tuple[Transformer, str]:
    """The model `uri` names and its precision (`W4A4`, `W16A16`)."""
    store = packed.find_quantized(uri)
    if store is not None:
        model, _, manifest = packed.load_quantized(store)
        assert isinstance(model, Transformer)
        return model.to(device), packed.precision(manifest)
    model = checkpoint.load_pretrained(uri, device)
    return model, f"W16A{model.arch.activation_bits}"


def run_evaluate(cfg: EvaluateConfig, ctx: WorkerContext) -> ExitCode:
    """Evaluate, compare, write the report; the worker contract's entry point for `evaluate`."""
    if ctx.rank != 0:
        return ExitCode.SUCCEEDED
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = {task.name: load_task_data(task.data) for task in cfg.tasks}
    model, precision = load_model(cfg.base, device)
    log_event("model", uri=cfg.base, precision=precision)
    results = evaluate_suite(model, cfg, data)
    base_results = base_precision = None
    if cfg.compare_to:
        baseline, base_precision = load_model(cfg.compare_to, device)
        log_event("baseline", uri=cfg.compare_to, precision=base_precision)
        base_results = evaluate_suite(baseline, cfg, data)
    report = compare(results, base_results, cfg.base, cfg.compare_to, precision, base_precision)
    markdown = render_markdown(report)
    if ctx.checkpoint_uri:
        store = open_store(ctx.checkpoint_uri)
        store.put_bytes(json.dumps(report, indent=1).encode(), REPORT_JSON)
        store.put_bytes(markdown.encode(), REPORT_MD)
    log_event("report", averageDrop=report["averageDrop"], uri=ctx.checkpoint_uri)
    print(markdown, file=sys.stderr, flush=True)
    return ExitCode.SUCCEEDED
