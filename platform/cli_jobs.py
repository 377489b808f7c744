"""`carina up|run|submit|get|list|delete|logs|suspend|resume`: the platform from a terminal.

Registered on the `carina` app by importing this module (see cli.py). `up` serves the
control plane with the embedded substrate; `run` runs one manifest to its end on the
embedded platform (or on `--server`) with a live progress bar; the rest talk to any server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from carina.platform.cli import _report, app, err, out
from carina.platform.client import (
    DEFAULT_SERVER,
    ApiError,
    CarinaClient,
    ServerUnreachable,
    local_token,
)
from carina.platform.manifests import ManifestError, load_jobs

if TYPE_CHECKING:
    from carina.platform.server.settings import Settings

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="CARINA_SERVER", help=f"control plane URL [default: {DEFAULT_SERVER}]"
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="CARINA_TOKEN", help="bearer token [default: the one `carina up` wrote]"
    ),
]
NamespaceOpt = Annotated[
    str, typer.Option("--namespace", "-n", envvar="CARINA_NAMESPACE", help="namespace")
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="CARINA_STATE_DIR",
        help="embedded platform state [default: ~/.carina]",
    ),
]
NameArg = Annotated[str, typer.Argument(help="TrainingJob name")]
FileArg = Annotated[Path, typer.Argument(help="TrainingJob manifest (YAML)")]

FINISHED = ("Succeeded", "Failed")


def _client(server: str | None, token: str | None) -> CarinaClient:
    try:
        return CarinaClient(server or DEFAULT_SERVER, token or local_token())
    except ImportError as exc:
        raise _missing_extra(exc, "server") from None


def _missing_extra(exc: ImportError, extras: str) -> typer.Exit:
    """Say which install is missing (the base install has no HTTP or server stack)."""
    err.print(
        f"this command needs carina's {extras} extra ({exc.name or exc} is missing):"
        f" pip install 'carina[{extras}]'",
        highlight=False,
        markup=False,
    )
    return typer.Exit(2)


@contextmanager
def _errors() -> Iterator[None]:
    """API errors as a line (and field paths), never a traceback."""
    try:
        yield
    except ServerUnreachable as exc:
        err.print(f"{exc}\n(start one with `carina up`, or pass --server)", highlight=False)
        raise typer.Exit(2) from None
    except ApiError as exc:
        err.print(
            f"error: {exc.status} {exc.reason}: {exc.message}",
            style="red",
            highlight=False,
            markup=False,
        )
        for e in exc.errors:
            err.print(f"  {e.get('path')}: {e.get('rule')}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    except ManifestError as exc:
        raise typer.Exit(_report(exc)) from None


# ---------------------------------------------------------------- serving


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
    state_dir: StateDirOpt = None,
) -> None:
    """Serve the control plane with the embedded substrate (jobs run on this machine)."""
    settings = _local_settings(state_dir)
    from carina.platform.server.backends.local import ensure_local_token
    from carina.platform.server.embedded import serve

    ensure_local_token(settings.resolved_tokens_file())
    out.print(
        f"Carina control plane on http://{host}:{port} (state: {settings.resolved_state_dir()};"
        f" token: {settings.resolved_state_dir() / 'token'})",
        highlight=False,
    )
    serve(settings, host, port)


def _local_settings(state_dir: Path | None) -> Settings:
    try:
        from carina.platform.server.settings import Settings
    except ImportError as exc:
        raise _missing_extra(exc, "server,train") from None

    overrides: dict[str, Any] = {"backend": "local"}
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    return Settings(**overrides)


@app.command()
def run(
    file: FileArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    state_dir: StateDirOpt = None,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="always start the embedded platform here")
    ] = False,
) -> None:
    """Run a job to its end with a live progress bar; exit 0 if it Succeeded, 1 if it Failed.

    Without --server it uses a control plane already answering on 127.0.0.1:8080, else it
    starts the embedded one in this process (stopping it, and the job's workers, at exit).
    """
    with _errors():
        settings = _local_settings(state_dir)
        jobs = load_jobs(file)
        if len(jobs) != 1:
            err.print(f"{file}: `carina run` takes one TrainingJob, found {len(jobs)}")
            raise typer.Exit(2)
        manifest = jobs[0].model_dump(mode="json", by_alias=True, exclude_none=True)
        with CarinaClient(server or DEFAULT_SERVER) as probe:
            remote = not embedded and (bool(server) or probe.healthy())
        if remote:
            with _client(server or None, token) as client:
                raise typer.Exit(_run_and_follow(client, namespace, manifest, embedded=False))
        from carina.platform.server.backends.local import ensure_local_token
        from carina.platform.server.embedded import EmbeddedServer

        own_token = ensure_local_token(settings.resolved_tokens_file())
        with EmbeddedServer(settings) as local:
            err.print(
                f"embedded control plane on {local.url} (state: {settings.resolved_state_dir()})",
                highlight=False,
                soft_wrap=True,
            )
            with CarinaClient(local.url, own_token) as client:
                code = _run_and_follow(client, namespace, manifest, embedded=True)
        raise typer.Exit(code)


def _run_and_follow(
    client: CarinaClient, namespace: str, manifest: dict[str, Any], embedded: bool
) -> int:
    name = manifest["metadata"]["name"]
    try:
        existing = client.get(namespace, name)
    except ApiError as exc:
        if exc.status != 404:
            raise
        existing = None
    if existing is not None:
        phase = (existing.get("status") or {}).get("phase")
        if phase in FINISHED or (existing.get("metadata") or {}).get("deletionTimestamp"):
            err.print(f"replacing the finished job {namespace}/{name} ({phase})", highlight=False)
            _delete_and_wait(client, namespace, name)
            existing = None
        else:
            err.print(f"following {namespace}/{name}, already {phase}", highlight=False)
    if existing is None:
        client.create(namespace, manifest)
        err.print(f"trainingjob {namespace}/{name} created", highlight=False)
    try:
        return follow(client, namespace, name)
    except KeyboardInterrupt:
        if embedded:
            why = "the workers save a checkpoint and stop; `carina run` again resumes the job"
        else:
            why = f"the job goes on at the server; `carina get {name}` shows how it does"
        err.print(f"\ninterrupted: {why}", highlight=False, soft_wrap=True)
        return 130


def _delete_and_wait(client: CarinaClient, namespace: str, name: str, timeout: float = 300) -> None:
    client.delete(namespace, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.get(namespace, name)
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.3)
    raise ApiError(504, "Timeout", f"{namespace}/{name} was not deleted in {timeout:.0f}s", [])


def follow(client: CarinaClient, namespace: str, name: str, interval: float = 0.5) -> int:
    """Show the job's progress until it finishes; its exit code (0 Succeeded, 1 Failed).

    On a terminal: a live bar. Elsewhere (CI logs, `make run | tee`): a line every 10 s.
    """
    seen_events = 0
    live = err.is_terminal
    last_line = 0.0
    columns = (
        TextColumn("[bold]{task.fields[phase]:<10}"),
        BarColumn(),
        TextColumn("step {task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False, disable=not live) as bar:
        task = bar.add_task(name, total=None, phase="Pending", steps="-", loss="-", tps="-")
        while True:
            job = client.get(namespace, name)
            status = job.get("status") or {}
            progress = status.get("progress") or {}
            events = client.events(namespace, name)
            for event in events[seen_events:]:
                if event["type"] == "Warning" or event["reason"] in ("Suspended", "Resumed"):
                    bar.console.print(
                        f"  {event['reason']}: {event['message']}", highlight=False, markup=False
                    )
            seen_events = len(events)
            loss = progress.get("loss")
            tps = progress.get("tokensPerSecond")
            fields = {
                "phase": status.get("phase", "Pending"),
                "steps": f"{progress.get('step', 0)}/{progress.get('totalSteps', '?')}",
                "loss": f"{loss:.3f}" if isinstance(loss, int | float) else "-",
                "tps": f"{tps:,.0f}" if isinstance(tps, int | float) else "-",
            }
            bar.update(
                task,
                total=progress.get("totalSteps") or None,
                completed=progress.get("step", 0),
                **fields,
            )
            finished = status.get("phase") in FINISHED
            if not live and (time.monotonic() - last_line >= 10 or finished):
                last_line = time.monotonic()
                err.print(
                    f"{fields['phase']:<10} step {fields['steps']}  loss {fields['loss']}"
                    f"  {fields['tps']} tok/s",
                    highlight=False,
                )
            if finished:
                break
            time.sleep(interval)
    _print_outcome(job)
    return 0 if status.get("phase") == "Succeeded" else 1


def _print_outcome(job: dict[str, Any]) -> None:
    status = job.get("status") or {}
    phase = status.get("phase")
    cond = next((c for c in status.get("conditions") or [] if c["type"] == phase), None)
    why = f" ({cond['reason']}: {cond['message']})" if cond else ""
    out.print(
        f"{job['metadata']['name']}: {phase}{why}", highlight=False, markup=False, soft_wrap=True
    )
    ckpt = status.get("lastCheckpoint")
    if ckpt:
        out.print(
            f"  last checkpoint: step {ckpt['step']} at {ckpt['uri']}",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"  restarts: {status.get('restarts', 0)}", highlight=False)


# ---------------------------------------------------------------- against any server


@app.command()
def submit(
    file: FileArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
) -> None:
    """Submit every TrainingJob in a manifest file."""
    with _errors(), _client(server, token) as client:
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
) -> None:
    """Show one job (a table row, or the whole object as YAML/JSON)."""
    with _errors(), _client(server, token) as client:
        job = client.get(namespace, name)
    _print_jobs([job], output)


@app.command("list")
def list_jobs(
    server: ServerOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = "default",
    output: Annotated[str, typer.Option("--output", "-o", help="table, yaml or json")] = "table",
) -> None:
    """List the jobs of a namespace."""
    with _errors(), _client(server, token) as client:
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
    with _errors(), _client(server, token) as client:
        if wait:
            _delete_and_wait(client, namespace, name)
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
    with _errors(), _client(server, token) as client:
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
    with _errors(), _client(server, token) as client:
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
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """Print the tail of one worker's log."""
    with _errors(), _client(server, token) as client:
        text = client.logs(namespace, name, worker, tail)
        typer.echo(text, nl=False)
        while follow_:
            time.sleep(1)
            fresh = client.logs(namespace, name, worker, tail)
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
    for col in ("NAME", "PHASE", "WORKLOAD", "WORKERS", "STEP", "LOSS", "RESTARTS", "AGE"):
        table.add_column(col)
    for job in jobs:
        status = job.get("status") or {}
        progress = status.get("progress") or {}
        workers = status.get("workers") or {}
        loss = progress.get("loss")
        table.add_row(
            job["metadata"]["name"],
            status.get("phase", "Pending"),
            status.get("workload") or next(iter(job["spec"]["workload"]), "-"),
            f"{workers.get('ready', 0)}/{job['spec'].get('replicas', 1)}",
            f"{progress.get('step', 0)}/{progress.get('totalSteps', '-')}" if progress else "-",
            f"{loss:.3f}" if isinstance(loss, int | float) else "-",
            str(status.get("restarts", 0)),
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
