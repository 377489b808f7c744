"""The Power-scheduler paper's claims at CPU scale: the fitted exponent b, and whether the best
learning rate moves across batch sizes and widths under power, WSD and cosine.

    .venv/bin/python bench/power_sweep.py [--processes 2] [--quick]

Shen et al. 2024 (arXiv 2408.13359) fit η_opt/β = a·T^b over many small µP runs under WSD
(pooled b ≈ -0.51), then claim that their Power scheduler, built on that law, needs no new
learning-rate search when batch size, token budget or width (µP) change, unlike cosine.

Part 1 (the fit): a grid over batch size, tokens and learning rate under WSD with µP on the
tiny proxy model (`train_proxy`, the sweep workload's trial), the final held-out loss after
the decay, the best lr per (β, T) refined by a parabola in ln lr, and the power-law fit with
its 95% interval (`sweep.fit`).
Part 2 (transfer): at equal tokens, two widths (dModel 64 and 128, µP base 256) and two batch
sizes; cosine and WSD sweep the peak lr, power sweeps a multiplier on the fitted a (its lr is
min(lrMax, β·a·n^b), so the peak lr is no knob). Reported: the best setting per (width,
batch) and its loss. A setting that "stays put" has the same argmin in every row.
Trials run in `--processes` processes, one thread each.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from carina.workloads.config import ScheduleSpec, SweepConfig
from carina.workloads.sweep.fit import best_lr, fit_power_law
from carina.workloads.sweep.proxy import train_proxy, trial_schedule

SEQ = 64
BASE: dict[str, Any] = {
    "model": {"preset": "tiny", "mup": True},
    "data": {"source": "python-stdlib", "maxBytes": 600_000},
    "seqLen": SEQ,
    "evalBatches": 16,
    "warmupFraction": 0.05,
}


def run(job: tuple[dict[str, Any], int, int, float, dict[str, Any] | None, int]) -> float:
    """One trial in a pool process: (config, batch, tokens, lr, schedule, d_model) -> loss."""
    cfg_doc, batch, tokens, lr, schedule_doc, width = job
    torch.set_num_threads(1)
    cfg = SweepConfig.model_validate(cfg_doc)
    steps = tokens // (batch * SEQ)
    schedule = trial_schedule(cfg, steps)
    if schedule_doc is not None:
        schedule = schedule.model_copy(update=schedule_doc)
    return train_proxy(cfg, batch, tokens, lr, schedule, {"d_model": width})


def fit_part(pool: ProcessPoolExecutor, quick: bool) -> dict[str, Any]:
    # β = 8 at four token counts, β = 16 at two (η_opt should rise with β).
    pairs = [(8, t) for t in (16_384, 32_768, 65_536, 131_072)] + [(16, 32_768), (16, 131_072)]
    if quick:
        pairs = pairs[1:4:2]
    lrs = list(np.geomspace(5e-4, 1.6e-2, 6))
    cfg = SweepConfig.model_validate({**BASE, "batchSizes": [8], "tokens": [16_384], "lrs": lrs})
    doc = cfg.model_dump(by_alias=True)
    points = [(b, t, lr) for b, t in pairs for lr in lrs]
    losses = list(pool.map(run, [(doc, b, t, lr, None, 64) for b, t, lr in points]))
    groups = []
    for b, t in pairs:
        row = [
            (lr, loss)
            for (bb, tt, lr), loss in zip(points, losses, strict=True)
            if (bb, tt) == (b, t)
        ]
        groups.append((b, t, best_lr([r[0] for r in row], [r[1] for r in row])))
    for b, t, o in groups:
        print(
            f"β {b} T {t}: best lr {o.lr:.4g} (grid {o.grid_lr:.4g}, loss {o.loss:.4f})", flush=True
        )
    inside = [(b, t, o) for b, t, o in groups if not o.at_edge]
    if len({t for _, t, _ in inside}) < 2:  # too few interior optima: fit them all, and say so
        print("fewer than two interior optima: the fit includes optima at the grid's edge")
        inside = groups
    fit = fit_power_law([g[0] for g in inside], [g[1] for g in inside], [g[2].lr for g in inside])
    return {"groups": groups, "fit": fit, "trials": len(points)}


def transfer_part(pool: ProcessPoolExecutor, fit: Any, lr_max: float) -> dict[str, Any]:
    tokens = 32_768
    widths, batches = [64, 128], [8, 16]
    peak_lrs = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    mults = [0.25, 0.5, 1.0, 2.0, 4.0]
    cfg = SweepConfig.model_validate({**BASE, "batchSizes": batches, "tokens": [tokens]})
    doc = cfg.model_dump(by_alias=True)
    jobs, keys = [], []
    for kind in ("cosine", "wsd", "power"):
        knobs = mults if kind == "power" else peak_lrs
        for w in widths:
            for b in batches:
                for k in knobs:
                    sched: dict[str, Any] = {"kind": kind}
                    lr = k
                    if kind == "power":
                        sched |= {"power_a": fit.a * k, "power_b": fit.b, "power_lr_max": lr_max}
                        lr = lr_max  # ignored by power (η_max caps it)
                    jobs.append((doc, b, tokens, lr, sched, w))
                    keys.append((kind, w, b, k))
    losses = list(pool.map(run, jobs))
    table: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for (kind, w, b, k), loss in zip(keys, losses, strict=True):
        table.setdefault((kind, w, b), []).append((k, loss))
    return {"table": table, "trials": len(jobs), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer token counts in part 1")
    args = parser.parse_args()
    ScheduleSpec()  # the schedules exist (fail early on an old tree)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.processes) as pool:
        part1 = fit_part(pool, args.quick)
        t1 = time.perf_counter() - start
        fit = part1["fit"]
        lr_max = max(o.lr for _, _, o in part1["groups"])
        part2 = transfer_part(pool, fit, lr_max)
    total = time.perf_counter() - start
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(
        f"part 1: {part1['trials']} trials in {t1:.0f} s; part 2: {part2['trials']} trials;"
        f" total {total:.0f} s"
    )
    print("\n| β | T | best lr (refined) | grid lr | loss | at edge |")
    print("|---:|---:|---:|---:|---:|:---:|")
    for b, t, o in part1["groups"]:
        edge = "yes" if o.at_edge else "no"
        print(f"| {b} | {t} | {o.lr:.4g} | {o.grid_lr:.4g} | {o.loss:.4f} | {edge} |")
    ci = fit.b_ci
    print(
        f"\nfit: a = {fit.a:.4g}, b = {fit.b:.3f}"
        + (f" (95% CI [{ci[0]:.3f}, {ci[1]:.3f}])" if ci else "")
        + f", R² = {fit.r2:.3f}, n = {fit.n}; paper: b ≈ -0.51"
    )
    print(f"\npart 2: T = {part2['tokens']} tokens; power lrMax = {lr_max:.4g}")
    print("| schedule | dModel | β | best knob | its loss | loss by knob |")
    print("|---|---:|---:|---:|---:|---|")
    for (kind, w, b), rows in sorted(part2["table"].items()):
        finite = [(k, v) for k, v in rows if math.isfinite(v)]
        k_best, v_best = min(finite, key=lambda r: r[1])
        knob = f"a×{k_best:g}" if kind == "power" else f"lr {k_best:.3g}"
        spread = " ".join(f"{v:.3f}" for _, v in rows)
        print(f"| {kind} | {w} | {b} | {knob} | {v_best:.4f} | {spread} |")


if __name__ == "__main__":
    main()
