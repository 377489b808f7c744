"""The sweep's report: JSON for the control plane, Markdown for people, plots (matplotlib).

Everything under `sweep/` at the job's checkpoint URI: `report.json`, `report.md`,
`loss_vs_lr.png`, `power_law.png`, next to the ledger they are computed from.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from carina.workloads.config import SweepConfig
from carina.workloads.runtime.storage import Store
from carina.workloads.sweep.fit import Optimum, PowerLawFit, best_lr, fit_power_law, power_settings

REPORT_KEY = "sweep/report.json"
MARKDOWN_KEY = "sweep/report.md"
PAPER = {"a": 4.6, "b": -0.51, "source": "Shen et al. 2024 (arXiv 2408.13359), pooled fit"}


def group_optima(
    rows: list[dict[str, Any]],
) -> list[tuple[int, int, Optimum]]:
    """(batch, tokens, optimum) for each group of finished trials with 3 or more lrs."""
    groups: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for row in rows:
        loss = row.get("loss")
        value = float(loss) if loss is not None else math.inf
        groups.setdefault((int(row["batchSize"]), int(row["tokens"])), []).append(
            (float(row["lr"]), value)
        )
    out = []
    for (batch, tokens), points in sorted(groups.items()):
        if len(points) < 3 or not any(math.isfinite(v) for _, v in points):
            continue
        lrs, losses = zip(*sorted(points), strict=True)
        out.append((batch, tokens, best_lr(list(lrs), list(losses))))
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def build_report(cfg: SweepConfig, rows: list[dict[str, Any]], total: int) -> dict[str, Any]:
    """The report document from the ledger's rows (`total`: trials in the grid)."""
    optima = group_optima(rows)
    interior = [(b, t, o) for b, t, o in optima if not o.at_edge]
    fit: PowerLawFit | None = None
    note = ""
    try:
        fit = fit_power_law(
            [b for b, _, _ in interior], [t for _, t, _ in interior], [o.lr for _, _, o in interior]
        )
        edge = len(optima) - len(interior)
        if edge:
            note = f"{edge} group(s) left out: their best lr is at the grid's edge"
    except ValueError as exc:
        note = f"no fit: {exc} ({len(interior)} group(s) with an optimum inside the grid)"
    recommendation = None
    if fit is not None:
        target = cfg.target
        recommendation = power_settings(
            fit,
            [o.lr for _, _, o in interior],
            cfg.seq_len,
            target.tokens,
            target.batch_size,
            target.seq_len or cfg.seq_len,
        )
    arch = cfg.model.resolve()
    return {
        "complete": len(rows) >= total,
        "trialsFinished": len(rows),
        "trialsTotal": total,
        "objective": cfg.objective,
        "schedule": cfg.schedule.kind,
        "seqLen": cfg.seq_len,
        "model": {"dModel": arch.d_model, "nLayers": arch.n_layers, "mup": arch.mup},
        "groups": [
            {
                "batchSize": b,
                "tokens": t,
                "bestLr": o.lr,
                "bestLoss": _finite(o.loss),
                "gridLr": o.grid_lr,
                "gridLoss": _finite(o.grid_loss),
                "refined": o.refined,
                "atEdge": o.at_edge,
            }
            for b, t, o in optima
        ],
        "fit": fit.to_dict() if fit is not None else None,
        "fitNote": note,
        "paper": PAPER,
        "recommendation": recommendation,
        "trials": sorted(rows, key=lambda r: (r["batchSize"], r["tokens"], r["lr"])),
    }


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page."""
    lines = [
        "# Learning-rate sweep",
        "",
        f"{report['trialsFinished']} of {report['trialsTotal']} trials; objective "
        f"{report['objective']}, schedule {report['schedule']}, seqLen {report['seqLen']}, "
        f"dModel {report['model']['dModel']} (µP {report['model']['mup']}).",
        "",
        "| batch | tokens | best lr | loss | grid lr | refined | at edge |",
        "|---:|---:|---:|---:|---:|:---:|:---:|",
    ]
    for g in report["groups"]:
        lines.append(
            f"| {g['batchSize']} | {g['tokens']} | {_num(g['bestLr'])} | {_num(g['bestLoss'])} "
            f"| {_num(g['gridLr'])} | {'yes' if g['refined'] else 'no'} "
            f"| {'yes' if g['atEdge'] else 'no'} |"
        )
    fit = report["fit"]
    lines.append("")
    if fit is None:
        lines.append(f"No power-law fit: {report['fitNote']}.")
    else:
        a_ci = fit["aCi"]
        b_ci = fit["bCi"]
        ci = (
            f" (95% CI a [{_num(a_ci[0])}, {_num(a_ci[1])}], b [{_num(b_ci[0])}, {_num(b_ci[1])}])"
            if a_ci and b_ci
            else ""
        )
        lines += [
            f"Fit η_opt = β·a·T^b: a = {_num(fit['a'])}, b = {_num(fit['b'])}{ci}, "
            f"R² = {fit['r2']:.3f}, {fit['n']} groups. "
            f"Paper: a = {report['paper']['a']}, b = {report['paper']['b']}.",
        ]
        if report["fitNote"]:
            lines.append(f"Note: {report['fitNote']}.")
        rec = report["recommendation"]
        s = rec["schedule"]
        lines += [
            "",
            f"Power scheduler for {rec['targetTokens']} tokens at batch {rec['targetBatchSize']}"
            f" x {rec['targetSeqLen']}: `kind: power, powerA: {s['powerA']:.4g}, "
            f"powerB: {s['powerB']:.4g}, powerLrMax: {s['powerLrMax']:.4g}` "
            f"(η at the target {_num(rec['lrAtTarget'])}, capped {_num(rec['lrAtTargetCapped'])}).",
        ]
    return "\n".join(lines) + "\n"


def render_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG plots: loss against lr per group, and η_opt/β against T with the fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for row in report["trials"]:
        if row.get("loss") is not None:
            groups.setdefault((row["batchSize"], row["tokens"]), []).append(
                (row["lr"], row["loss"])
            )
    for (b, t), pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"β={b}, T={t:.3g}")
    for g in report["groups"]:
        if g["bestLoss"] is not None:
            ax.plot([g["bestLr"]], [g["bestLoss"]], marker="*", color="black")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final held-out loss")
    ax.legend(fontsize=6)
    out["sweep/loss_vs_lr.png"] = _png(fig, plt)
    fit = report["fit"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in report["groups"]:
        ax.plot(
            [g["tokens"]],
            [g["bestLr"] / g["batchSize"]],
            marker="x" if g["atEdge"] else "o",
            color="gray" if g["atEdge"] else "C0",
        )
    if fit is not None:
        ts = sorted({g["tokens"] for g in report["groups"]})
        ax.plot(ts, [fit["a"] * t ** fit["b"] for t in ts], label=f"fit b={fit['b']:.3f}")
        ax.legend()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens T")
    ax.set_ylabel("η_opt / β")
    out["sweep/power_law.png"] = _png(fig, plt)
    return out


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(store: Store, report: dict[str, Any], plots: bool = True) -> None:
    """Write the plots and the Markdown, then the JSON last (its presence means done)."""
    if plots:
        try:
            for key, data in render_plots(report).items():
                store.put_bytes(data, key)
        except ImportError:  # matplotlib is optional: the numbers are in the JSON
            pass
    store.put_bytes(render_markdown(report).encode(), MARKDOWN_KEY)
    store.put_bytes(json.dumps(report, indent=1).encode(), REPORT_KEY)
