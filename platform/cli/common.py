"""What the `carina` commands that talk to a control plane share.

The --server/--token/--namespace options, the client built from them, job names and
namespaces checked before they go into a URL, API errors printed as a line (with field
paths) and an exit code, the missing-extra message, and deleting a job and waiting until it
is gone (`carina run` replacing a finished job, `carina delete --wait`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from carina.platform.api.manifests import ManifestError
from carina.platform.api.types import NAME_PATTERN
from carina.platform.cli.app import err, report_invalid
from carina.platform.cli.client import (
    DEFAULT_SERVER,
    ApiError,
    CarinaClient,
    ServerUnreachable,
    local_token,
)

NAMESPACE_MAX_LENGTH = 63  # a Kubernetes namespace: a DNS label


def name_check(what: str, max_length: int) -> Callable[[str], str]:
    """A typer callback refusing what the API's path rules refuse (exit 2, no request made)."""

    def check(value: str) -> str:
        if len(value) > max_length or not re.fullmatch(NAME_PATTERN, value):
            raise typer.BadParameter(
                f"{value!r} is not a {what}: lowercase letters, digits and '-', starting and"
                f" ending with a letter or digit, at most {max_length} characters"
            )
        return value

    return check


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
    str,
    typer.Option(
        "--namespace",
        "-n",
        envvar="CARINA_NAMESPACE",
        help="namespace",
        callback=name_check("namespace", NAMESPACE_MAX_LENGTH),
    ),
]
FileArg = Annotated[Path, typer.Argument(help="TrainingJob manifest (YAML)")]


def client_for(server: str | None, token: str | None) -> CarinaClient:
    """A client for `--server` (default: this machine) with `--token` (default: `carina up`'s)."""
    try:
        return CarinaClient(server or DEFAULT_SERVER, token or local_token())
    except ImportError as exc:
        raise missing_extra(exc, "server") from None


def missing_extra(exc: ImportError, extras: str) -> typer.Exit:
    """Say which install is missing (the base install has no HTTP or server stack)."""
    err.print(
        f"this command needs carina's {extras} extra ({exc.name or exc} is missing):"
        f" pip install 'carina[{extras}]'",
        highlight=False,
        markup=False,
    )
    return typer.Exit(2)


@contextmanager
def api_errors() -> Iterator[None]:
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
        raise typer.Exit(report_invalid(exc)) from None


def delete_and_wait(client: CarinaClient, namespace: str, name: str, timeout: float = 300) -> None:
    """Delete a job and return once the server no longer has it (504 after `timeout` s)."""
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


def stage_text(progress: dict[str, Any]) -> str | None:
    """A staged run's stage as `name i/n` (None for a run without stages)."""
    stage = progress.get("stage")
    if not stage:
        return None
    index, count = progress.get("stageIndex"), progress.get("stageCount")
    return f"{stage} {index}/{count}" if index and count else str(stage)
