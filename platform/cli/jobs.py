"""`carina submit|get|list|delete|logs|suspend|resume`: jobs on any control plane.

Registered on the `carina` app by importing this module (see main.py); each command talks to
the server at `--server` (default: the one `carina up` serves on this machine).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from carina.platform.api.manifest_files import load_jobs
from carina.platform.api.types import NAME_MAX_LENGTH
from carina.platform.cli.app import app, out
from carina.platform.cli.common import (
    FileArg,
    NamespaceOpt,
    ServerOpt,
    TokenOpt,
    api_errors,
    client_for,
    delete_and_wait,
    name_check,
    stage_text,
)
from carina.platform.cli.pipelines import admitted_false, pipeline_lines

NameArg = Annotated[
    str,
    typer.Argument(help="TrainingJob name", callback=name_check("job name", NAME_MAX_LENGTH)),
]


@app.command()
def submit(
    file: FileArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Submit every TrainingJob in a manifest file."""
    with api_errors(), client_for(server, token) as client:
        for job in load_jobs(file):
            manifest = job.model_dump(mode="json", by_alias=True, exclude_none=True)
            ns = job.metadata.namespace or namespace
            client.create(ns, manifest)
            out.print(f"trainingjob {ns}/{job.metadata.name} created", highlight=False)


@app.command()
def get(
    name: NameArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    output: Annotated[str, typer.Option("--output", "-o", help="table, yaml or json")] = "table",
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="then print the job again each time it changes")
    ] = False,
) -> None:
    """Show one job (a table row, or the whole object as YAML/JSON).

    The table is followed by why the job waits, if it does, and its upstream and downstream
    jobs (job:// references and spec.dependsOn), each with its phase and step. With --watch,
    the job as it changes, streamed by the server, until it is deleted (or Ctrl-C).
    """
    if watch:
        with api_errors(), client_for(server, token) as client:
            for kind, job in client.watch(namespace, name):
                _print_jobs([job], output)
                if kind == "DELETED":
                    out.print(f"trainingjob {namespace}/{name} deleted", highlight=False)
                    return
        return
    with api_errors(), client_for(server, token) as client:
        job = client.get(namespace, name)
        table = output not in ("json", "yaml")
        lines = pipeline_lines(job, client.list_jobs(namespace)) if table else []
    _print_jobs([job], output)
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("list")
def list_jobs(
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    output: Annotated[str, typer.Option("--output", "-o", help="table, yaml or json")] = "table",
) -> None:
    """List the jobs of a namespace."""
    with api_errors(), client_for(server, token) as client:
        jobs = client.list_jobs(namespace)
    _print_jobs(jobs, output)


@app.command()
def delete(
    name: NameArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    wait: Annotated[bool, typer.Option(help="wait until the job is gone")] = False,
) -> None:
    """Delete a job (its workers stop after saving a checkpoint)."""
    with api_errors(), client_for(server, token) as client:
        if wait:
            delete_and_wait(client, namespace, name)
        else:
            client.delete(namespace, name)
    out.print(f"trainingjob {namespace}/{name} deleted", highlight=False)


@app.command()
def suspend(
    name: NameArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Stop a job's workers after a checkpoint, keeping the job."""
    with api_errors(), client_for(server, token) as client:
        client.suspend(namespace, name, True)
    out.print(f"trainingjob {namespace}/{name} suspended", highlight=False)


@app.command()
def resume(
    name: NameArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Start a suspended job again from its newest checkpoint."""
    with api_errors(), client_for(server, token) as client:
        client.suspend(namespace, name, False)
    out.print(f"trainingjob {namespace}/{name} resumed", highlight=False)


@app.command()
def logs(
    name: NameArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    worker: Annotated[int, typer.Option("--worker", "-w", help="worker index (rank)")] = 0,
    tail: Annotated[int, typer.Option(help="lines")] = 100,
    restart: Annotated[
        int | None,
        typer.Option(
            "--restart",
            "-r",
            min=0,
            help="read generation N (status.restarts) only, e.g. the one that just failed",
        ),
    ] = None,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """Print the tail of one worker's log.

    On a cluster: the current generation's (a restart keeps the last failed generation's pods:
    `--restart N` reads them); on this machine: the whole log, every generation after a
    `--- carina: worker <i>, restart <r>` line (`--restart N` reads generation N only).
    """
    with api_errors(), client_for(server, token) as client:
        text = client.logs(namespace, name, worker, tail, restart)
        typer.echo(text, nl=False)
        while follow_:
            time.sleep(1)
            fresh = client.logs(namespace, name, worker, tail, restart)
            typer.echo(_new_lines(text, fresh), nl=False)
            text = fresh


def _new_lines(old: str, new: str) -> str:
    """The lines of `new` after the last line `old` ended with."""
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    if not old_lines:
        return new
    last = old_lines[-1]
    for i in range(len(new_lines) - 1, -1, -1):
        if new_lines[i] == last:
            return "".join(new_lines[i + 1 :])
    return new


def _print_jobs(jobs: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(jobs[0] if len(jobs) == 1 else jobs, indent=2))
        return
    if output == "yaml":
        typer.echo(yaml.safe_dump_all(jobs, sort_keys=False), nl=False)
        return
    table = Table(box=None, pad_edge=False)
    # On a narrow terminal the name and phase stay whole; the free-text columns give way.
    longest = max((len(j["metadata"]["name"]) for j in jobs), default=4)
    table.add_column("NAME", no_wrap=True, min_width=longest)
    table.add_column("PHASE", no_wrap=True, min_width=len("Restarting"))
    for col in ("WORKLOAD", "WORKERS", "STEP", "LOSS", "STAGE", "RESTARTS", "QUEUE", "REASON"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    table.add_column("AGE", no_wrap=True)
    for job in jobs:
        status = job.get("status") or {}
        queueing = status.get("queueing") or {}
        progress = status.get("progress") or {}
        workers = status.get("workers") or {}
        loss = progress.get("loss")
        # Why it has no workers: its quota, else what else holds it (an upstream job ...).
        waiting = admitted_false(job)
        reason = queueing.get("reason") or (waiting[0] if waiting else None)
        table.add_row(
            job["metadata"]["name"],
            status.get("phase", "Pending"),
            status.get("workload") or next(iter(job["spec"]["workload"]), "-"),
            f"{workers.get('ready', 0)}/{job['spec'].get('replicas', 1)}",
            f"{progress.get('step', 0)}/{progress.get('totalSteps', '-')}" if progress else "-",
            f"{loss:.3f}" if isinstance(loss, int | float) else "-",
            stage_text(progress) or "-",
            str(status.get("restarts", 0)),
            job["spec"].get("queue") or "-",
            reason or "-",
            _age(job["metadata"].get("creationTimestamp")),
        )
    out.print(table)


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    created = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((datetime.now(UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
