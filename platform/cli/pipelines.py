"""What `carina get <job>` says of a job's place in a pipeline: why it waits, and its
upstream and downstream jobs with their phase and step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from carina.platform.api.reasons import ConditionType
from carina.platform.api.types import TrainingJob
from carina.platform.planning.dependencies import references, upstream_names


def admitted_false(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of the job's Admitted condition while it is False: why it has no
    workers (an upstream, quota, topology, preflight)."""
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == ConditionType.ADMITTED and cond.get("status") == "False":
            return str(cond.get("reason", "")), str(cond.get("message", ""))
    return None


def _where(job: Mapping[str, Any] | None) -> str:
    """`Running, step 120/600`, `Pending: WaitingForUpstream`, or `does not exist`."""
    if job is None:
        return "does not exist"
    status = job.get("status") or {}
    text = str(status.get("phase") or "Pending")
    progress = status.get("progress") or {}
    if progress.get("step"):
        text += f", step {progress['step']}/{progress.get('totalSteps') or '?'}"
    waiting = admitted_false(job)
    if waiting is not None:
        text += f": {waiting[0]}"
    return text


def pipeline_lines(
    job: Mapping[str, Any], namespace_jobs: Iterable[Mapping[str, Any]]
) -> list[str]:
    """The lines under `carina get`'s table: why the job waits, its upstream jobs (each with
    the field that names it and the checkpoint it resolved to) and its downstream jobs."""
    name = job["metadata"]["name"]
    others = {j["metadata"]["name"]: j for j in namespace_jobs}
    lines = []
    waiting = admitted_false(job)
    if waiting is not None:
        lines.append(f"waiting: {waiting[0]}: {waiting[1]}")
    try:
        refs = references(TrainingJob.parse({k: v for k, v in job.items() if k != "status"}))
    except ValidationError:
        refs = ()
    resolved = {i.get("field"): i for i in (job.get("status") or {}).get("inputs") or ()}
    for ref in refs:
        uri = (resolved.get(ref.field) or {}).get("uri")
        took = f" -> {uri}" if uri else ""
        lines.append(f"upstream: {ref.job} ({_where(others.get(ref.job))}) via {ref.field}{took}")
    for other_name, other in sorted(others.items()):
        if other_name != name and name in upstream_names(other.get("spec") or {}):
            lines.append(f"downstream: {other_name} ({_where(other)})")
    return lines
