"""Pipelines: a TrainingJob that starts from other jobs' results waits for them (pure).

A job depends on the jobs of its namespace that its checkpoint inputs name as `job://<name>`
(`api.types.CHECKPOINT_INPUTS`: pretraining's `init`, fine-tuning's and quantization's `base`,
evaluation's `base` and `compareTo`) and on those `spec.dependsOn` lists. `gate(job, lookup)`
decides, from what `lookup` says of the other jobs (their phase, last checkpoint, progress and
own upstreams), whether the job may start:

- **clear**: every upstream has Succeeded. `inputs` record each upstream, a reference with
  the checkpoint it resolved to (the upstream's `status.lastCheckpoint`); the engine writes
  them to `status.inputs`, and the spec file the worker reads carries the resolved URIs
  (`resolved_config`), so a worker only ever sees a URI. Once recorded, inputs are fixed: a
  job that has started (or is about to) is clear without asking again, even when an upstream
  is deleted later, and every restart reads the same checkpoints.
- **wait**: an upstream has not Succeeded yet (WaitingForUpstream, naming it, its phase and
  its step) or does not exist (UpstreamMissing: it may be created later). The job gets no
  workers, and the admission writers leave it out: it takes no quota while it waits.
- **fail**: an upstream Failed (UpstreamFailed, naming it and why), Succeeded without the
  checkpoint a reference needs (UpstreamWithoutCheckpoint), or the chain of unfinished
  upstreams loops back to the job (DependencyCycle, naming the loop). It can never start.

A failure goes before a wait: a job whose one upstream failed fails even while another runs.

Which rule is checked where: the name syntax (a bare name, so never another namespace) and a
job naming itself, by the models and the CRD's CEL rules (the API server sees one object at a
time); a cycle across jobs, by `carina validate` over a file's jobs and the control plane's
create (`find_cycle`), and on a cluster, where jobs may be created by any client, by this gate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import (
    CHECKPOINT_INPUTS,
    FINISHED_PHASES,
    CheckpointStatus,
    JobInput,
    Phase,
    Progress,
    TrainingJob,
)
from carina.workloads.config import JOB_REFERENCE_PREFIX, is_job_reference

DEPENDS_ON = "spec.dependsOn"


@dataclass(frozen=True)
class Reference:
    """One upstream of a job: the field that names it, and whether it names its checkpoint."""

    field: str  # spec.workload.finetune.base, spec.dependsOn[0]
    job: str
    checkpoint: bool  # a job:// input (resolved to a URI), not only a dependsOn entry


def references(job: TrainingJob) -> tuple[Reference, ...]:
    """Every upstream the job names: its job:// inputs first, then `spec.dependsOn`."""
    kind = job.spec.workload.kind
    config = job.spec.workload.config.to_wire()
    found = [
        Reference(f"spec.workload.{kind}.{name}", value.removeprefix(JOB_REFERENCE_PREFIX), True)
        for k, name in CHECKPOINT_INPUTS
        if k == kind and isinstance(value := config.get(name), str) and is_job_reference(value)
    ]
    found += [
        Reference(f"{DEPENDS_ON}[{i}]", name, False)
        for i, name in enumerate(job.spec.depends_on or ())
    ]
    return tuple(found)


def upstream_names(spec: Mapping[str, Any]) -> frozenset[str]:
    """The jobs a spec in its wire form depends on (for holders of raw objects, such as the
    operator's cache, that index many jobs without parsing each)."""
    names = {n for n in spec.get("dependsOn") or () if isinstance(n, str)}
    workload = spec.get("workload")
    for kind, field in CHECKPOINT_INPUTS:
        config = workload.get(kind) if isinstance(workload, Mapping) else None
        value = config.get(field) if isinstance(config, Mapping) else None
        if isinstance(value, str) and is_job_reference(value):
            names.add(value.removeprefix(JOB_REFERENCE_PREFIX))
    return frozenset(names)


@dataclass(frozen=True)
class Upstream:
    """What a gate needs to know of another job of the namespace."""

    phase: str
    last_checkpoint: CheckpointStatus | None = None
    progress: Progress | None = None
    failure: str = ""  # a Failed job's reason and message
    upstreams: tuple[str, ...] = ()  # the jobs it depends on itself

    @classmethod
    def of(cls, job: TrainingJob) -> Upstream:
        """The view of a stored job."""
        status = job.status
        failed = (
            next((c for c in status.conditions if c.type == ConditionType.FAILED), None)
            if status is not None
            else None
        )
        return cls(
            phase=status.phase if status is not None else Phase.PENDING,
            last_checkpoint=status.last_checkpoint if status is not None else None,
            progress=status.progress if status is not None else None,
            failure=f"{failed.reason}: {failed.message}" if failed is not None else "",
            upstreams=tuple(dict.fromkeys(r.job for r in references(job))),
        )


# What a substrate knows of the other jobs of the job's namespace, by name (None: no such job).
Lookup = Callable[[str], Upstream | None]


@dataclass(frozen=True)
class Gate:
    """Whether the job may start: clear (with its inputs), wait, or fail, and why."""

    verdict: Literal["clear", "wait", "fail"]
    reason: str = ""
    message: str = ""
    inputs: tuple[JobInput, ...] = ()

    @property
    def clear(self) -> bool:
        return self.verdict == "clear"

    @property
    def waits(self) -> bool:
        return self.verdict == "wait"

    @property
    def fails(self) -> bool:
        return self.verdict == "fail"


CLEAR = Gate("clear")


def gate(job: TrainingJob, lookup: Lookup) -> Gate:
    """Whether `job` may start now (see the module docstring for the rules)."""
    refs = references(job)
    status = job.status
    if not refs:
        return CLEAR
    recorded = {(i.field, i.job): i for i in (status.inputs or ())} if status else {}
    if status is not None and status.phase in FINISHED_PHASES:
        return Gate("clear", inputs=tuple(recorded.values()))
    if all((r.field, r.job) in recorded for r in refs):
        return Gate("clear", inputs=tuple(recorded[(r.field, r.job)] for r in refs))

    # A loop first: the other jobs of a loop fail too, in any order, and each must name the
    # loop rather than the first of them to fail.
    loop = find_cycle(job.metadata.name, _unfinished_upstreams(job, lookup))
    if loop is not None:
        return Gate("fail", Reason.DEPENDENCY_CYCLE, loop_message(loop))
    seen = {name: lookup(name) for name in dict.fromkeys(r.job for r in refs)}
    for name, up in seen.items():
        if up is not None and up.phase == Phase.FAILED:
            why = f": {up.failure}" if up.failure else ""
            return Gate("fail", Reason.UPSTREAM_FAILED, f"upstream job {name} failed{why}"[:4096])
    missing = [name for name, up in seen.items() if up is None]
    if missing:
        return Gate(
            "wait", Reason.UPSTREAM_MISSING, _waiting(missing, "does not exist (yet)", seen)
        )
    running = [name for name, up in seen.items() if up is not None and up.phase != Phase.SUCCEEDED]
    if running:
        return Gate("wait", Reason.WAITING_FOR_UPSTREAM, _waiting(running, None, seen))
    inputs = []
    for r in refs:
        up = seen[r.job]
        assert up is not None
        ckpt = up.last_checkpoint
        if not r.checkpoint:
            inputs.append(JobInput(field=r.field, job=r.job))
        elif ckpt is None:
            return Gate(
                "fail",
                Reason.UPSTREAM_WITHOUT_CHECKPOINT,
                f"upstream job {r.job} Succeeded without a checkpoint, which {r.field} needs",
            )
        else:
            inputs.append(JobInput(field=r.field, job=r.job, uri=ckpt.uri, step=ckpt.step))
    return Gate("clear", inputs=tuple(inputs))


def _waiting(names: list[str], what: str | None, seen: Mapping[str, Upstream | None]) -> str:
    """`waiting for job a (Running, step 120/600)`, or `job a does not exist (yet)`."""
    first = names[0]
    up = seen[first]
    if what is not None:
        text = f"job {first} {what}"
    else:
        assert up is not None
        p = up.progress
        step = f", step {p.step}/{p.total_steps or '?'}" if p is not None and p.step else ""
        text = f"waiting for job {first} ({up.phase}{step})"
    others = len(names) - 1
    return text + (f"; and {others} other job{'s' * (others > 1)}" if others else "")


def _unfinished_upstreams(job: TrainingJob, lookup: Lookup) -> Callable[[str], Iterable[str]]:
    """Each job's upstreams, through jobs that have not Succeeded (a finished edge waits on
    nothing, so a loop through it holds nobody up)."""
    name = job.metadata.name
    mine = tuple(dict.fromkeys(r.job for r in references(job)))

    def upstreams_of(other: str) -> Iterable[str]:
        if other == name:
            return mine
        up = lookup(other)
        if up is None or up.phase == Phase.SUCCEEDED:
            return ()
        return up.upstreams

    return upstreams_of


def find_cycle(start: str, upstreams_of: Callable[[str], Iterable[str]]) -> tuple[str, ...] | None:
    """The loop of dependencies through `start` (`start, ..., start`), or None.

    Depth first along `upstreams_of`; each job is expanded once, so a namespace of n jobs and
    e edges costs O(n + e).
    """
    path = [start]
    stack = [iter(upstreams_of(start))]
    expanded = {start}
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            stack.pop()
            path.pop()
            continue
        if nxt == start:
            return (*path, start)
        if nxt in expanded:
            continue
        expanded.add(nxt)
        path.append(nxt)
        stack.append(iter(upstreams_of(nxt)))
    return None


def loops_among(jobs: Iterable[TrainingJob]) -> dict[str, tuple[Reference, tuple[str, ...]]]:
    """Each job of `jobs` (one namespace's) caught in a loop of dependencies among them: the
    reference that leads into the loop, and the loop (`a, b, a`). For checks that see many
    jobs at once: `carina validate` over a file, the control plane before it stores a job."""
    named = {job.metadata.name: references(job) for job in jobs}

    def upstreams_of(name: str) -> Iterable[str]:
        return [r.job for r in named.get(name, ())]

    out: dict[str, tuple[Reference, tuple[str, ...]]] = {}
    for name, refs in named.items():
        loop = find_cycle(name, upstreams_of)
        if loop is not None:
            out[name] = (next(r for r in refs if r.job == loop[1]), loop)
    return out


def loop_message(loop: tuple[str, ...]) -> str:
    """How a loop of dependencies is told: `... loop, so none of them can start: a -> b -> a`."""
    return "the jobs' dependencies loop, so none of them can start: " + " -> ".join(loop)


class UnresolvedReference(ValueError):
    """A job:// input with no recorded checkpoint: its worker must not start yet."""


def resolved_config(job: TrainingJob) -> dict[str, Any]:
    """The workload config's wire form, each job:// input replaced by the URI recorded for it
    in `status.inputs` (what the worker's spec file holds)."""
    kind = job.spec.workload.kind
    config = job.spec.workload.config.to_wire()
    inputs = (job.status.inputs or []) if job.status is not None else []
    recorded = {i.field: i for i in inputs}
    for k, name in CHECKPOINT_INPUTS:
        value = config.get(name)
        if k != kind or not isinstance(value, str) or not is_job_reference(value):
            continue
        field = f"spec.workload.{kind}.{name}"
        found = recorded.get(field)
        if found is None or found.uri is None or JOB_REFERENCE_PREFIX + found.job != value:
            raise UnresolvedReference(f"{field} names {value}, which is not resolved yet")
        config[name] = found.uri
    return config
