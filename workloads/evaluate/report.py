"""The comparison report: a checkpoint against its base, task by task, as JSON and Markdown.

Each task gets its change (model - base, in the metric's units) and its relative drop (the
share of the base's score lost; for perplexity a rise counts as a drop). The average drop is
the mean relative drop over the held-out tasks (those not marked `target`): the SSR paper's
measure of what fine-tuning cost the model's general abilities, or, for a quantized model
against its full-precision base, what quantization cost. Each model's precision (`W4A4`,
`W16A16`) heads the report.
"""

from __future__ import annotations

import math
from typing import Any

from carina.workloads.evaluate import metrics
from carina.workloads.evaluate.harness import TaskResult


def compare(
    model: list[TaskResult],
    base: list[TaskResult] | None,
    model_uri: str,
    base_uri: str | None,
    model_precision: str,
    base_precision: str | None,
) -> dict[str, Any]:
    """The report document (JSON-able); precisions as `W4A4`, `W16A16`."""
    tasks = []
    drops = []
    base_by_name = {r.name: r for r in base or []}
    for r in model:
        entry: dict[str, Any] = {**r.to_json()}
        b = base_by_name.get(r.name)
        if b is not None:
            drop = metrics.relative_drop(b.score, r.score, r.higher_is_better)
            entry |= {
                "baselineScore": b.score,
                "baselineMetrics": b.metrics,
                "change": r.score - b.score,
                "relativeDrop": drop,
            }
            if not r.target:
                drops.append(drop)
        tasks.append(entry)
    return {
        "model": model_uri,
        "modelPrecision": model_precision,
        "baseline": base_uri,
        "baselinePrecision": base_precision,
        "tasks": tasks,
        "averageDrop": metrics.mean(drops) if drops else None,
        "heldOutTasks": len(drops),
    }


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:+.1f}%" if pct else f"{x:.4g}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per task."""
    lines = [f"# Evaluation of `{report['model']}` ({report['modelPrecision']})", ""]
    if report["baseline"]:
        lines += [f"Baseline: `{report['baseline']}` ({report['baselinePrecision']})", ""]
    lines += [
        "| task | kind | metric | baseline | model | change | drop |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for t in report["tasks"]:
        name = t["name"] + (" (target)" if t["target"] else "")
        change = t.get("change")
        lines.append(
            f"| {name} | {t['kind']} | {t['metric']} | {_fmt(t.get('baselineScore'))} | "
            f"{_fmt(t['score'])} | {'-' if change is None else f'{change:+.4g}'} | "
            f"{_fmt(t.get('relativeDrop'), pct=True)} |"
        )
    if report["averageDrop"] is not None:
        lines += [
            "",
            f"Average drop over {report['heldOutTasks']} held-out task(s): "
            f"{_fmt(report['averageDrop'], pct=True)} (positive: worse than the baseline).",
        ]
    return "\n".join(lines) + "\n"
