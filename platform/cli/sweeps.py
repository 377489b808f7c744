"""`carina sweep JOB`: a learning-rate sweep's result, from any control plane.

Prints per (batch, tokens) the best learning rate, the fitted power law η_opt = β·a·T^b with
its 95% intervals, and the Power-scheduler settings it recommends (`-o json` for the whole
report). Registered on the `carina` app by importing this module.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from carina.platform.api.types import NAME_MAX_LENGTH
from carina.platform.cli.app import app, out
from carina.platform.cli.common import (
    NamespaceOpt,
    ServerOpt,
    TokenOpt,
    api_errors,
    client_for,
    name_check,
)

JobArg = Annotated[
    str,
    typer.Argument(
        help="the sweep's TrainingJob", callback=name_check("job name", NAME_MAX_LENGTH)
    ),
]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table or json")]


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def fit_line(report: dict[str, Any]) -> str:
    """The fit in one line, with its intervals and the paper's values beside it."""
    fit = report.get("fit")
    if not fit:
        return f"no fit: {report.get('fitNote') or 'too few optima'}"
    line = f"η_opt = β·a·T^b: a = {_g(fit['a'])}, b = {_g(fit['b'])}"
    if fit.get("aCi") and fit.get("bCi"):
        a_lo, a_hi = fit["aCi"]
        b_lo, b_hi = fit["bCi"]
        line += f" (95% CI a [{_g(a_lo)}, {_g(a_hi)}], b [{_g(b_lo)}, {_g(b_hi)}])"
    paper = report.get("paper") or {}
    return line + f", R² {fit['r2']:.3f}; paper a = {paper.get('a')}, b = {paper.get('b')}"


@app.command()
def sweep(
    name: JobArg,
    namespace: NamespaceOpt = "default",
    server: ServerOpt = None,
    token: TokenOpt = None,
    output: OutputOpt = "table",
) -> None:
    """A sweep's best learning rates, its power-law fit and the Power-scheduler settings."""
    with api_errors(), client_for(server, token) as client:
        report = client.sweep_report(namespace, name)
    if output == "json":
        out.print_json(json.dumps(report))
        return
    table = Table(box=None, pad_edge=False)
    for col in ("BATCH", "TOKENS", "BEST LR", "LOSS", "GRID LR", "REFINED", "AT EDGE"):
        table.add_column(col)
    for g in report.get("groups") or []:
        table.add_row(
            str(g["batchSize"]),
            str(g["tokens"]),
            _g(g["bestLr"]),
            _g(g["bestLoss"]),
            _g(g["gridLr"]),
            "yes" if g["refined"] else "no",
            "yes" if g["atEdge"] else "no",
        )
    out.print(
        f"{name}: {report['trialsFinished']}/{report['trialsTotal']} trials, "
        f"schedule {report['schedule']}, objective {report['objective']}"
    )
    out.print(table)
    out.print(fit_line(report))
    rec = report.get("recommendation")
    if rec:
        s = rec["schedule"]
        out.print(
            f"Power scheduler for {rec['targetTokens']} tokens at batch {rec['targetBatchSize']}: "
            f"powerA {s['powerA']:.4g}, powerB {s['powerB']:.4g}, powerLrMax {s['powerLrMax']:.4g}"
        )
