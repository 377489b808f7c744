"""`carina version|crds|validate|operator|health-agent`: the commands that need no control plane.

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
from carina.platform.api.manifest_files import CarinaObject, load_documents, parse_object
from carina.platform.api.manifests import FieldError, ManifestError
from carina.platform.api.queues import ClusterQueue, LocalQueue, TrainingPriorityClass
from carina.platform.api.types import TrainingJob
from carina.platform.cli.app import app, err, out, report_invalid
from carina.platform.planning.dependencies import loop_message, loops_among


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
    """Print (or write, one file per kind) Carina's CustomResourceDefinitions.

    TrainingJob, ClusterQueue, LocalQueue and TrainingPriorityClass.
    """
    if output is None:
        typer.echo(crd.all_crds_yaml(), nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    for filename, text in crd.crd_files().items():
        target = output / filename
        target.write_text(text)
        err.print(f"wrote {target}", highlight=False)


@app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="manifests (YAML): TrainingJobs, ClusterQueues, LocalQueues,"
            " TrainingPriorityClasses"
        ),
    ],
) -> None:
    """Check manifests with the same models the API server's CRDs are generated from.

    The TrainingJobs of all the files together are checked for loops of dependencies (job://
    references and spec.dependsOn), namespace by namespace: the API server sees one object at
    a time and cannot.
    """
    failed = 0
    jobs: list[tuple[str, TrainingJob]] = []
    for path in files:
        try:
            documents = list(load_documents(path))
        except ManifestError as exc:
            failed += report_invalid(exc)
            continue
        for label, document in documents:
            try:
                obj = parse_object(document, label)
            except ManifestError as exc:
                failed += report_invalid(exc)
                continue
            if isinstance(obj, TrainingJob):
                jobs.append((label, obj))
            out.print(f"{label}: ok ({_summary(obj)})", highlight=False)
    failed += _report_loops(jobs)
    if failed:
        raise typer.Exit(code=1)


def _report_loops(jobs: list[tuple[str, TrainingJob]]) -> int:
    """Report every job caught in a loop of dependencies; how many there are."""
    by_namespace: dict[str | None, list[tuple[str, TrainingJob]]] = {}
    for label, job in jobs:
        by_namespace.setdefault(job.metadata.namespace, []).append((label, job))
    failed = 0
    for members in by_namespace.values():
        loops = loops_among(job for _, job in members)
        for label, job in members:
            if job.metadata.name in loops:
                ref, loop = loops[job.metadata.name]
                error = FieldError(ref.field, loop_message(loop))
                failed += report_invalid(ManifestError(label, [error]))
    return failed


def _summary(obj: CarinaObject) -> str:
    """What `carina validate` says of a valid object, in a few words."""
    name = obj.metadata.name
    if isinstance(obj, ClusterQueue):
        quotas = ", ".join(f"{r.name} {r.nominal_quota}" for r in obj.spec.resources)
        cohort = f"cohort {obj.spec.cohort}" if obj.spec.cohort else "no cohort"
        return f"ClusterQueue {name}: {cohort}; {quotas}"
    if isinstance(obj, LocalQueue):
        where = f"{obj.metadata.namespace}/{name}" if obj.metadata.namespace else name
        return f"LocalQueue {where} -> ClusterQueue {obj.spec.cluster_queue}"
    if isinstance(obj, TrainingPriorityClass):
        return f"TrainingPriorityClass {name}: {obj.value}"
    return f"{name}: {obj.spec.workload.kind}, {obj.spec.replicas} worker(s)"


@app.command()
def operator() -> None:
    """Run the TrainingJob operator against the current kubeconfig (CARINA_OPERATOR_* settings)."""
    # carina.platform must not import carina.operators (the dependency points the other way),
    # so the command becomes `python -m carina.operators` in this process's place.
    if util.find_spec("kopf") is None:
        err.print("the operator needs the operator extra: pip install 'carina[operator]'")
        raise typer.Exit(code=1)
    os.execv(sys.executable, [sys.executable, "-m", "carina.operators"])


@app.command(
    "health-agent",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def health_agent(ctx: typer.Context) -> None:
    """Check this node's health and label its Node PASS, WARN or EVICT (--help: its options)."""
    # As `carina operator`: the agent lives in carina.operators, so the command becomes
    # `python -m carina.operators.health` with the same arguments, in this process's place.
    if util.find_spec("kubernetes") is None or util.find_spec("prometheus_client") is None:
        err.print("the health agent needs the operator extra: pip install 'carina[operator]'")
        raise typer.Exit(code=1)
    os.execv(sys.executable, [sys.executable, "-m", "carina.operators.health", *ctx.args])
