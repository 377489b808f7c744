"""The `carina` command line: one entry for people, CI and the chart.

Commands: `version`, `crds`, `validate` here; `up`, `run` in cli_embedded; `submit`, `get`,
`list`, `delete`, `logs`, `suspend`, `resume` in cli_jobs (what the two share is in
cli_common). Each command is a thin adapter around a function of carina.platform; errors are
printed as field paths and rules, never as tracebacks.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata, util
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from carina.platform import crd
from carina.platform.manifest_files import load_documents
from carina.platform.manifests import ManifestError, parse_manifest

app = typer.Typer(
    name="carina",
    help="Carina: train foundation models on Kubernetes, or on this machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


def version_string() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("carina")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@app.command()
def version() -> None:
    """Print Carina's version."""
    out.print(f"carina {version_string()}", highlight=False)


@app.command()
def crds(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write into this folder instead of stdout"),
    ] = None,
) -> None:
    """Print (or write) the TrainingJob CustomResourceDefinition."""
    text = crd.crd_yaml()
    if output is None:
        typer.echo(text, nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    target = output / crd.CRD_FILENAME
    target.write_text(text)
    err.print(f"wrote {target}", highlight=False)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="TrainingJob manifests (YAML)")],
) -> None:
    """Check manifests with the same models the API server's CRD is generated from."""
    failed = 0
    for path in files:
        try:
            documents = list(load_documents(path))
        except ManifestError as exc:
            failed += _report(exc)
            continue
        for label, document in documents:
            try:
                job = parse_manifest(document, label)
            except ManifestError as exc:
                failed += _report(exc)
                continue
            out.print(
                f"{label}: ok ({job.metadata.name}: {job.spec.workload.kind}, "
                f"{job.spec.replicas} worker(s))",
                highlight=False,
            )
    if failed:
        raise typer.Exit(code=1)


@app.command()
def operator() -> None:
    """Run the TrainingJob operator against the current kubeconfig (CARINA_OPERATOR_* settings)."""
    # carina.platform must not import carina.operators (the dependency points the other way),
    # so the command becomes `python -m carina.operators` in this process's place.
    if util.find_spec("kopf") is None:
        err.print("the operator needs the operator extra: pip install 'carina[operator]'")
        raise typer.Exit(code=1)
    os.execv(sys.executable, [sys.executable, "-m", "carina.operators"])


def _report(exc: ManifestError) -> int:
    # soft_wrap: a long path stays on one line, so `<file>: invalid` can be searched for.
    err.print(
        f"{exc.source}: invalid", style="bold red", highlight=False, markup=False, soft_wrap=True
    )
    for error in exc.errors:
        err.print(f"  {error}", highlight=False, markup=False, soft_wrap=True)
    return 1


from carina.platform import cli_embedded, cli_jobs  # noqa: E402, F401  registers up, run, submit, ...


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
