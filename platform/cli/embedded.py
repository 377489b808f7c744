"""`carina up|run`: the embedded platform from a terminal, and following a job to its end.

Registered on the `carina` app by importing this module (see main.py). `up` serves the
control plane with the embedded substrate; `run` runs one manifest to its end on the
embedded platform (or on `--server`) with a live progress bar.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from carina.platform.api.manifest_files import load_jobs
from carina.platform.cli.app import app, err, out
from carina.platform.cli.client import DEFAULT_SERVER, ApiError, CarinaClient
from carina.platform.cli.common import (
    FileArg,
    NamespaceOpt,
    ServerOpt,
    TokenOpt,
    api_errors,
    client_for,
    delete_and_wait,
    missing_extra,
    stage_text,
)

if TYPE_CHECKING:
    from carina.platform.controlplane.settings import Settings

StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="CARINA_STATE_DIR",
        help="embedded platform state [default: ~/.carina]",
    ),
]
FINISHED = ("Succeeded", "Failed")


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
    state_dir: StateDirOpt = None,
) -> None:
    """Serve the control plane with the embedded substrate (jobs run on this machine).

    One state folder, one server: a second `carina up` on the same folder is refused at once,
    touching neither the store nor any worker.
    """
    settings = _local_settings(state_dir)
    from carina.platform.controlplane.backends.embedded import TokenFileError, ensure_local_token
    from carina.platform.controlplane.embedded_server import listen, serve, url_of
    from carina.platform.embedded.state_lock import StateInUse, StateLock

    state = settings.resolved_state_dir()
    try:
        lock = StateLock(state)
    except StateInUse as exc:
        raise _refused(str(exc)) from None
    with lock:
        try:
            sock = listen(host, port)
        except OSError as exc:
            raise _refused(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        url = url_of(sock)
        lock.record(url)
        try:
            ensure_local_token(settings.resolved_tokens_file())
            out.print(
                f"Carina control plane on {url} (state: {state}; token: {state / 'token'})",
                highlight=False,
            )
            out.print(
                f"Web console: {url}/console/ (log in with the token in {state / 'token'})",
                highlight=False,
                soft_wrap=True,
            )
            serve(settings, sock)
        except TokenFileError as exc:
            raise _refused(f"the tokens file is not valid: {exc}") from None


def _refused(message: str) -> typer.Exit:
    err.print(f"error: {message}", style="red", highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(1)


def _local_settings(state_dir: Path | None) -> Settings:
    try:
        from carina.platform.controlplane.settings import Settings
    except ImportError as exc:
        raise missing_extra(exc, "server,train") from None

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
    with api_errors():
        settings = _local_settings(state_dir)
        jobs = load_jobs(file)
        if len(jobs) != 1:
            err.print(f"{file}: `carina run` takes one TrainingJob, found {len(jobs)}")
            raise typer.Exit(2)
        manifest = jobs[0].model_dump(mode="json", by_alias=True, exclude_none=True)
        with CarinaClient(server or DEFAULT_SERVER) as probe:
            remote = not embedded and (bool(server) or probe.healthy())
        if remote:
            with client_for(server or None, token) as client:
                raise typer.Exit(_run_and_follow(client, namespace, manifest, embedded=False))
        from carina.platform.controlplane.backends.embedded import ensure_local_token
        from carina.platform.controlplane.embedded_server import EmbeddedServer
        from carina.platform.embedded.state_lock import StateInUse

        try:
            embedded_server = EmbeddedServer(settings)
        except StateInUse as exc:
            raise _refused(str(exc)) from None
        own_token = ensure_local_token(settings.resolved_tokens_file())
        with embedded_server as local:
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
            delete_and_wait(client, namespace, name)
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
                "steps": f"{progress.get('step', 0)}/{progress.get('totalSteps', '?')}"
                + (f" ({stage})" if (stage := stage_text(progress)) else ""),
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
