"""DeiT-LT on long-tailed digits: a ViT alone, DeiT's plain distillation, and DeiT-LT.

    .venv/bin/python bench/deit_lt.py [--seeds 1,2,3] [--out deit_lt.json]
    .venv/bin/python bench/deit_lt.py --quick    # a smoke run in under a minute

scikit-learn's digits cut long-tailed at imbalance ratio 100 (100, 60, 36, ... 1 training
images for the digits 0-9) with a balanced held-out set of 50 per class, the `tiny` preset.
Three variants (`VISION_RECIPES`), each for every seed, each run the worker's own `vision`
workload (`run_vision`, on the CPU, one torch thread, checkpoints in a temporary folder) whose
`report.json` is read back:

- vit: the student alone (a class token only), cross-entropy on weak views;
- deit: a ResNet teacher trained without SAM, hard distillation on the same weak views, no DRW;
- deit-lt: a SAM-trained teacher, distillation on strong (out-of-distribution) views, DRW.

Prints a Markdown table, mean ± sample standard deviation over the seeds, of the test-time
prediction (the two heads' average; the class head for the ViT) and of the distillation head;
`--out` also writes every run's figures as JSON. About 6 minutes on 2 idle CPU cores. Results
and how to read them: docs/benchmarks.md, "DeiT-LT on long-tailed digits".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from carina.workloads.config import VISION_RECIPES, VisionConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.vision.run import REPORT_JSON, run_vision

VARIANTS = ("vit", "deit", "deit-lt")

# Shared by every variant: only the recipe's switches differ.
BASE: dict[str, Any] = {
    "model": {"preset": "tiny"},
    "data": {"source": "digits", "imbalanceRatio": 100, "maxPerClass": 100, "testPerClass": 50},
    "teacher": {"epochs": 60, "lr": 5e-3},
    "optimizer": {"lr": 3e-3, "betas": [0.9, 0.999], "weightDecay": 0.05, "gradClip": 0.0},
    "epochs": 150,
    "batchSize": 32,
    "logEvery": 1000,
}
QUICK = {"teacher": {"epochs": 5}, "epochs": 10}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def config(variant: str, seed: int, quick: bool) -> VisionConfig:
    doc = merged(merged(BASE, QUICK) if quick else BASE, VISION_RECIPES[variant])
    return VisionConfig.model_validate(merged(doc, {"seed": seed}))


def run_one(variant: str, seed: int, quick: bool) -> dict[str, Any]:
    """One run of the workload; its report and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = WorkerContext(job=f"bench-{variant}", checkpoint_uri=f"file://{tmp}")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = run_vision(config(variant, seed, quick), ctx)
        seconds = time.perf_counter() - t0
        assert rc == 0, f"{variant} seed {seed} exited {rc}"
        report = json.loads((Path(tmp) / REPORT_JSON).read_text())
    return {"variant": variant, "seed": seed, "seconds": seconds, "report": report}


def figures(run: dict[str, Any]) -> dict[str, float]:
    """The figures of one run: the prediction's (avg) and each head's, the teacher's."""
    student, teacher = run["report"]["student"], run["report"]["teacher"]
    out = {f"{k}": student["avg"][k] for k in ("overall", "head", "medium", "tail")}
    for head in ("cls", "dist"):
        if head in student:
            out[f"{head}_overall"] = student[head]["overall"]
            out[f"{head}_tail"] = student[head]["tail"]
    if teacher is not None:
        out["teacher_overall"], out["teacher_tail"] = teacher["overall"], teacher["tail"]
    out["seconds"] = run["seconds"]
    return out


def mean_sd(values: list[float], percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    m = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{m:.1f}"
    return f"{m:.1f} ± {statistics.stdev(values) * scale:.1f}"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per variant, mean ± sd over its seeds."""
    cols = [
        ("overall", "overall %"),
        ("head", "head %"),
        ("medium", "medium %"),
        ("tail", "tail %"),
        ("dist_overall", "DIST overall %"),
        ("dist_tail", "DIST tail %"),
        ("cls_tail", "CLS tail %"),
        ("teacher_overall", "teacher overall %"),
        ("teacher_tail", "teacher tail %"),
        ("seconds", "s / run"),
    ]
    lines = [
        "| variant | " + " | ".join(name for _, name in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for variant in VARIANTS:
        rows = [figures(r) for r in runs if r["variant"] == variant]
        if not rows:
            continue
        cells = []
        for key, _ in cols:
            values = [row[key] for row in rows if key in row]
            cells.append(mean_sd(values, percent=key != "seconds") if values else "-")
        seeds = len(rows)
        lines.append(f"| {variant}, {seeds} seed{'s' * (seeds > 1)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="a few epochs: a smoke run")
    parser.add_argument("--out", type=Path, help="write every run's figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    t0 = time.perf_counter()
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run = run_one(variant, seed, args.quick)
            runs.append(run)
            f = figures(run)
            print(
                f"{variant:8s} seed {seed}: overall {f['overall']:.3f} tail {f['tail']:.3f}"
                f" ({run['seconds']:.0f} s)",
                flush=True,
            )
    print(f"\n{table(runs)}\n\n{time.perf_counter() - t0:.0f} s in all")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
