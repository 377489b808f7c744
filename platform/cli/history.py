"""`carina history [NAME-OR-UID]`: jobs that finished or were deleted, on any control plane.

Without an argument, a table of the namespace's records, newest end first (`--phase`,
`--since`, `--label`, `--limit` filter it); with a job's name (its newest record) or uid,
that record: final status, conditions, events, metrics and the tail of each worker's log.
Registered on the `carina` app by importing this module.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from carina.platform.cli.app import app, out
from carina.platform.cli.client import ApiError
from carina.platform.cli.common import NamespaceOpt, ServerOpt, TokenOpt, api_errors, client_for

_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since_time(value: str, now: datetime | None = None) -> str:
    """`--since` as the API takes it: an RFC 3339 time as given, or `30m`/`2h`/`7d` ago."""
    match = _DURATION.match(value.strip())
    if match is None:
        return value  # the server checks it and names the rule
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    when = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command()
def history(
    job: Annotated[
        str | None, typer.Argument(help="a job's name (its newest record) or uid")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    phase: Annotated[str | None, typer.Option(help="Succeeded, Failed, Running ...")] = None,
    since: Annotated[
        str | None, typer.Option(help="ended since: RFC 3339, or a span ago (30m, 2h, 7d)")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="key=value (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option(help="records to show, 1 to 500")] = 50,
    output: Annotated[str, typer.Option("--output", "-o", help="table, yaml or json")] = "table",
) -> None:
    """Jobs that finished or were deleted: a table, or one job's record."""
    with api_errors(), client_for(server, token) as client:
        if job is None:
            page = client.history(
                namespace,
                phase=phase or "",
                since=since_time(since) if since else "",
                labelSelector=",".join(label or []),
                limit=limit,
            )
            items: list[dict[str, Any]] = page["items"]
            if not _structured(page, output):
                _print_table(items, namespace)
            return
        uid = job
        if not _UID.match(job):
            found = client.history(namespace, name=job, limit=1)["items"]
            if not found:
                raise ApiError(
                    404, "NotFound", f"no history of job {job} in namespace {namespace}", []
                )
            uid = found[0]["uid"]
        record = client.history_record(namespace, uid)
    if not _structured(record, output):
        _print_record(record)


def _structured(doc: Any, output: str) -> bool:
    if output == "json":
        out.print_json(json.dumps(doc))
        return True
    if output == "yaml":
        out.print(yaml.safe_dump(doc, sort_keys=False), highlight=False, markup=False)
        return True
    return False


def _print_table(items: list[dict[str, Any]], namespace: str) -> None:
    if not items:
        out.print(f"No job history in namespace {namespace}.", highlight=False)
        return
    table = Table(box=None, pad_edge=False)
    # On a narrow terminal (or none: 80 columns) the name, phase and times stay whole; the
    # reason and the uid give way.
    longest = max((len(r["name"]) for r in items), default=4)
    table.add_column("NAME", no_wrap=True, min_width=longest)
    table.add_column("PHASE", no_wrap=True, min_width=len("Restarting"))
    table.add_column("REASON", no_wrap=True, overflow="ellipsis")
    for col in ("FINISHED", "DELETED"):
        table.add_column(col, no_wrap=True, min_width=len("2026-01-01 00:00"))
    for col in ("RESTARTS", "STEP", "LOSS"):
        table.add_column(col, no_wrap=True)
    table.add_column("UID", no_wrap=True, overflow="ellipsis")
    for r in items:
        loss = r.get("finalLoss")
        table.add_row(
            r["name"],
            r.get("phase") or "-",
            r.get("reason") or "-",
            _when(r.get("finishedAt"))[:16],
            _when(r.get("deletedAt"))[:16],
            str(r.get("restarts", 0)),
            "-" if r.get("finalStep") is None else str(r["finalStep"]),
            "-" if loss is None else f"{loss:.4f}",
            r["uid"],
        )
    # Into a pipe or a file nothing is cut (a terminal's width would make no sense there).
    if out.is_terminal:
        out.print(table)
    else:
        Console(file=out.file, width=max(out.width, 160), color_system=None).print(table)


def _print_record(r: dict[str, Any]) -> None:
    say = _say
    metrics = r.get("metrics") or {}
    reason = r.get("reason")
    ending = f"{r.get('phase')}" + (f" ({reason}: {r.get('message') or ''})" if reason else "")
    for label, value in (
        ("Name", f"{r['namespace']}/{r['name']}"),
        ("UID", r["uid"]),
        ("Phase", ending),
        ("Queue", r.get("queue") or "-"),
        ("Created", _when(r.get("createdAt"))),
        ("Started", _when(r.get("startedAt"))),
        ("Finished", _when(r.get("finishedAt"))),
        ("Deleted", _when(r.get("deletedAt"))),
        ("Restarts", str(r.get("restarts", 0))),
        ("Final step", _or_dash(r.get("finalStep"))),
        ("Final loss", _or_dash(r.get("finalLoss"))),
        ("Tokens/s", _or_dash(metrics.get("tokensPerSecond"))),
        ("Goodput", _percent(metrics.get("goodput"))),
    ):
        say(f"{label + ':':<12}{value}")
    loss = metrics.get("loss") or []
    if loss:
        best = min(v for _, v in loss)
        say(
            f"{'Loss curve:':<12}{len(loss)} points, step {loss[0][0]} {loss[0][1]:.4f} ->"
            f" step {loss[-1][0]} {loss[-1][1]:.4f} (lowest {best:.4f})"
        )
    evals = metrics.get("evalLoss") or []
    if evals:
        say(f"{'Eval loss:':<12}{evals[-1][1]:.4f} at step {evals[-1][0]}")
    conditions = r.get("conditions") or []
    if conditions:
        out.print()
        table = Table(box=None, pad_edge=False, title="Conditions", title_justify="left")
        for col in ("TYPE", "STATUS", "REASON", "MESSAGE"):
            table.add_column(col)
        for c in conditions:
            table.add_row(
                c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", "")
            )
        out.print(table)
    events = r.get("events") or []
    if events:
        out.print()
        table = Table(box=None, pad_edge=False, title="Events", title_justify="left")
        for col in ("LAST SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"):
            table.add_column(col)
        for e in events:
            table.add_row(
                _when(e.get("lastTimestamp")),
                e.get("type", ""),
                e.get("reason", ""),
                str(e.get("count", 1)),
                e.get("message", ""),
            )
        out.print(table)
    for index, text in sorted((r.get("logs") or {}).items(), key=lambda kv: int(kv[0])):
        out.print()
        say(f"--- worker {index} log (tail)")
        out.print(text.rstrip("\n"), highlight=False, markup=False, soft_wrap=True)


def _say(line: str) -> None:
    out.print(line, highlight=False, markup=False, soft_wrap=True)


def _when(value: str | None) -> str:
    return value.replace("T", " ").replace("Z", "") if value else "-"


def _or_dash(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
