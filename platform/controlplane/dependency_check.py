"""Before a job is stored: would it close a loop of dependencies with the jobs already there?

The API server sees one object at a time, so its CEL rules refuse only a job that names
itself; the control plane can look at the others. It follows the new job's upstreams (job://
references and spec.dependsOn) through the stored jobs of its namespace, at most
`MAX_JOBS_WALKED` of them, and asks `planning.dependencies.loops_among` whether the new job
is in a loop. A loop formed some other way (another client, jobs edited later) is caught by
the platform's gate, which fails the job with DependencyCycle.
"""

from __future__ import annotations

from pydantic import ValidationError

from carina.platform.api.types import TrainingJob
from carina.platform.controlplane.backend_errors import Invalid, NotFound
from carina.platform.controlplane.backends.base import Backend
from carina.platform.planning.dependencies import loop_message, loops_among, references

MAX_JOBS_WALKED = 256


async def refuse_dependency_loop(namespace: str, job: TrainingJob, backend: Backend) -> None:
    """`Invalid` naming the field that leads into the loop, if storing `job` would close one."""
    name = job.metadata.name
    stored: dict[str, TrainingJob] = {}
    frontier = [r.job for r in references(job)]
    while frontier and len(stored) < MAX_JOBS_WALKED:
        upstream = frontier.pop()
        if upstream == name or upstream in stored:
            continue
        try:
            other = TrainingJob.model_validate_json(await backend.get(namespace, upstream))
        except (NotFound, ValidationError):
            continue  # not there (yet), or a stored object the models refuse: no edge
        stored[upstream] = other
        frontier += [r.job for r in references(other)]
    found = loops_among([job, *stored.values()]).get(name)
    if found is not None:
        ref, loop = found
        raise Invalid(f"{ref.field}: {loop_message(loop)}", [(ref.field, loop_message(loop))])
