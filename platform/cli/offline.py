"""`carina version|crds|validate|operator`: the commands that need no control plane.

Registered on the `carina` app by importing this module (see main.py).
"""

from __future__ import annotations

import os
import sys
from importlib import metadata, util
from pathlib import Path
from typing import Annotated

import typer

from carina.platform.api import crd
from carina.platform.api.manifest_files import load_documents
from carina.platform.api.manifests import ManifestError, parse_manifest
from carina.platform.cli.app import app, err, out, report_invalid


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
            failed += report_invalid(exc)
            continue
        for label, document in documents:
            try:
                job = parse_manifest(document, label)
            except ManifestError as exc:
                failed += report_invalid(exc)
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
