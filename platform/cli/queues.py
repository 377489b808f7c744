"""`carina queues [show NAME | local]`: the queues jobs wait in, on any control plane.

`carina queues` lists the ClusterQueues (on the embedded platform, `this-machine`) with what
their admitted jobs hold of their quota; `carina queues show NAME` one queue, resource by
resource, and the jobs waiting in it in order, each with why; `carina queues local -n NS`
the LocalQueues of a namespace. Registered on the `carina` app by importing this module.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from carina.platform.api.queues import CPU, GPU, MEMORY
from carina.platform.cli.app import app, out
from carina.platform.cli.common import (
    NamespaceOpt,
    ServerOpt,
    TokenOpt,
    api_errors,
    client_for,
    name_check,
)

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="table, yaml or json")]
QueueNameArg = Annotated[
    str, typer.Argument(help="ClusterQueue name", callback=name_check("queue name", 63))
]

queues_app = typer.Typer(
    help="The queues jobs wait in: `carina queues` lists the ClusterQueues.",
    no_args_is_help=False,
)
app.add_typer(queues_app, name="queues")


@queues_app.callback(invoke_without_command=True)
def queues(
    ctx: typer.Context,
    server: ServerOpt = None,
    token: TokenOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List the ClusterQueues: cohort, strategy, reserved/nominal per resource, job counts."""
    if ctx.invoked_subcommand is not None:
        return
    with api_errors(), client_for(server, token) as client:
        items = client.cluster_queues()
    if _structured(items, output):
        return
    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "COHORT", "STRATEGY", "GPUS", "CPU", "MEMORY", "ADMITTED", "PENDING"):
        table.add_column(col)
    for q in items:
        held = {r["name"]: r for r in q.get("resources") or []}
        table.add_row(
            q["name"],
            q.get("cohort") or "-",
            q.get("strategy") or "-",
            *(_held(held.get(r), r) for r in (GPU, CPU, MEMORY)),
            str(q.get("admittedJobs", 0)),
            str(q.get("pendingJobs", 0)),
        )
    out.print(table)


@queues_app.command()
def show(
    name: QueueNameArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    output: OutputOpt = "table",
) -> None:
    """One ClusterQueue: quota and usage per resource, and its pending jobs in order."""
    with api_errors(), client_for(server, token) as client:
        q = client.cluster_queue(name)
    if _structured(q, output):
        return
    pending = q.get("pending") or []
    total = q.get("pendingJobs", len(pending))
    for label, value in (
        ("Name", q["name"]),
        ("Cohort", q.get("cohort") or "-"),
        ("Strategy", q.get("strategy") or "-"),
        ("Stop policy", q.get("stopPolicy") or "None"),
        ("Admitted", f"{q.get('admittedJobs', 0)} job(s)"),
        ("Pending", f"{total} job(s)"),
    ):
        out.print(f"{label + ':':<13}{value}", highlight=False, markup=False)
    out.print()
    resources = Table(box=None, pad_edge=False)
    for col in ("RESOURCE", "NOMINAL", "RESERVED", "BORROWED", "BORROWING LIMIT", "LENDING LIMIT"):
        resources.add_column(col)
    for r in q.get("resources") or []:
        resource = r["name"]
        resources.add_row(
            resource,
            _amount(resource, r.get("nominal")),
            _amount(resource, r.get("reserved")),
            _amount(resource, r.get("borrowed")),
            _amount(resource, r.get("borrowingLimit")),
            _amount(resource, r.get("lendingLimit")),
        )
    out.print(resources)
    out.print()
    if not pending:
        hidden = " (in namespaces you may not list)" if total else ""
        out.print(f"No pending jobs shown{hidden}.", highlight=False, markup=False)
        return
    out.print("Pending jobs, in queue order:", highlight=False)
    jobs = Table(box=None, pad_edge=False)
    for col in ("POSITION", "JOB", "QUEUE", "PRIORITY", "REASON", "MESSAGE"):
        jobs.add_column(col)
    for p in pending:
        jobs.add_row(
            str(p["position"]) if p.get("position") is not None else "-",
            f"{p['namespace']}/{p['name']}",
            p.get("localQueue") or "-",
            str(p.get("priority", 0)),
            p.get("reason") or "-",
            p.get("message") or "",
        )
    out.print(jobs)
    if total > len(pending):
        out.print(
            f"{total - len(pending)} more in namespaces you may not list.",
            highlight=False,
            markup=False,
        )


@queues_app.command()
def local(
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    output: OutputOpt = "table",
) -> None:
    """The LocalQueues of a namespace, and the ClusterQueue each leads to."""
    with api_errors(), client_for(server, token) as client:
        items = client.local_queues(namespace)
    if _structured(items, output):
        return
    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "CLUSTERQUEUE", "PENDING", "ADMITTED"):
        table.add_column(col)
    for lq in items:
        table.add_row(
            lq["name"],
            lq["clusterQueue"],
            str(lq.get("pendingJobs", 0)),
            str(lq.get("admittedJobs", 0)),
        )
    out.print(table)


def _structured(data: Any, output: str) -> bool:
    """Print `data` as JSON or YAML when asked; whether it did."""
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return True
    if output == "yaml":
        typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
        return True
    return False


def _held(resource: dict[str, Any] | None, name: str) -> str:
    """reserved/nominal of one resource, or - when the queue has no quota of it."""
    if resource is None:
        return "-"
    return f"{_amount(name, resource.get('reserved'))}/{_amount(name, resource.get('nominal'))}"


def _amount(resource: str, value: object) -> str:
    """A number in the resource's unit: bytes of memory in binary units, others as counts."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if resource == MEMORY:
        for suffix, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
            if value >= size:
                return f"{_number(value / size)}{suffix}"
    return _number(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0")
