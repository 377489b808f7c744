"""Which folders of this machine a job may name, on the embedded platform.

Workers run as the user who runs `carina up`, so a local path in a job reaches whatever that
user can: another namespace's checkpoints, ~/.ssh, /etc/passwd. Before a job is stored, each
local path in it must lie inside a folder its namespace may use:

- the namespace's own area, `<state>/jobs/<namespace>/`, which holds its jobs' run folders
  (a job that names no checkpoint URI checkpoints into its own), and
- each root of `CARINA_LOCAL_ROOTS` that lists the namespace or lists none, `{namespace}` in
  its path standing for the namespace. The default root is `/tmp/carina/{namespace}`: every
  namespace has a folder there, `file:///tmp/carina/<namespace>/...`, for the URIs its jobs
  share (one job's checkpoints as the next one's `base`).

A `job://<name>` input is not a path: it resolves to that job's checkpoint, under its own
checkpoint URI, which was checked when it was created. Local means `file:///p` and `/p`;
`pvc://claim/p`, which workers here read as
`<CARINA_PVC_MOUNT_ROOT, default /mnt/pvc>/claim/p` and which is checked as that folder (refused
unless a root covers it); and the plain paths of data files, globs and tokenizer files, a
relative one being taken from the job's run folder, the worker's working directory. `s3://` is
not local. A path and the folders are compared after `Path.resolve`: symlinks followed, `..`
collapsed. The check runs when a job is created; what an operator links into an allowed
folder later is the operator's choice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carina.platform.embedded.launcher import run_paths
from carina.workloads.config import DataSpec, is_job_reference
from carina.workloads.contract import (
    DEFAULT_PVC_MOUNT_ROOT,
    PVC_MOUNT_ROOT_ENV,
    ContractError,
    local_path,
)

if TYPE_CHECKING:
    from carina.platform.api.types import TrainingJob

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a DNS label, as the API checks
_RUN_FOLDER_STAND_IN = "00000000"  # a job's uid is not known before it is stored


@dataclass(frozen=True)
class LocalRoot:
    """A folder jobs may name: for the `namespaces` listed, or for every namespace (None)."""

    path: str  # `{namespace}` stands for the job's namespace
    namespaces: tuple[str, ...] | None = None

    def folder(self, namespace: str) -> Path | None:
        """The folder this root gives `namespace`, None when it gives it none."""
        if self.namespaces is not None and namespace not in self.namespaces:
            return None
        return Path(os.path.expanduser(self.path.replace("{namespace}", namespace)))


DEFAULT_LOCAL_ROOTS = (LocalRoot("/tmp/carina/{namespace}"),)


@dataclass(frozen=True)
class LocalFolders:
    """What the check needs to know about this machine."""

    state_dir: Path
    roots: tuple[LocalRoot, ...] = DEFAULT_LOCAL_ROOTS
    pvc_mount_root: str = DEFAULT_PVC_MOUNT_ROOT  # where workers here find pvc:// claims

    @classmethod
    def for_workers(
        cls, state_dir: Path, roots: tuple[LocalRoot, ...], worker_env: Mapping[str, str]
    ) -> LocalFolders:
        """The folders of a machine whose workers get `worker_env` (their pvc:// mount root)."""
        pvc = worker_env.get(PVC_MOUNT_ROOT_ENV) or DEFAULT_PVC_MOUNT_ROOT
        return cls(state_dir=state_dir, roots=roots, pvc_mount_root=pvc)

    def allowed(self, namespace: str) -> list[Path]:
        """The folders `namespace` may use, resolved; its own area first."""
        folders = [namespace_area(self.state_dir, namespace)]
        folders += [f for root in self.roots if (f := root.folder(namespace)) is not None]
        return [f.resolve() for f in folders]


def namespace_area(state_dir: Path, namespace: str) -> Path:
    """`<state>/jobs/<namespace>`: the folder that holds the namespace's run folders."""
    return run_paths(state_dir, namespace, "job", _RUN_FOLDER_STAND_IN).root.parent


def local_path_fields(job: TrainingJob) -> Iterator[tuple[str, str, bool]]:
    """(field path, value, whether it is a URI) for each path-valued field the job sets."""
    if job.spec.checkpoint.uri:
        yield "spec.checkpoint.uri", job.spec.checkpoint.uri, True
    w = job.spec.workload
    if w.pretrain is not None:
        if w.pretrain.init:
            yield "spec.workload.pretrain.init", w.pretrain.init, True
        yield from _data_paths("spec.workload.pretrain.data", w.pretrain.data)
    if w.finetune is not None:
        yield "spec.workload.finetune.base", w.finetune.base, True
        if w.finetune.data.path:
            yield "spec.workload.finetune.data.path", w.finetune.data.path, False
    if w.quantize is not None:
        yield "spec.workload.quantize.base", w.quantize.base, True
        yield from _data_paths("spec.workload.quantize.data", w.quantize.data)
    if w.evaluate is not None:
        yield "spec.workload.evaluate.base", w.evaluate.base, True
        if w.evaluate.compare_to:
            yield "spec.workload.evaluate.compareTo", w.evaluate.compare_to, True
        for i, task in enumerate(w.evaluate.tasks):
            if task.data.path:
                yield f"spec.workload.evaluate.tasks[{i}].data.path", task.data.path, False
    if w.vision is not None and w.vision.data.path:
        yield "spec.workload.vision.data.path", w.vision.data.path, False
    if w.sweep is not None:
        yield from _data_paths("spec.workload.sweep.data", w.sweep.data)


def _data_paths(prefix: str, data: DataSpec) -> Iterator[tuple[str, str, bool]]:
    for i, pattern in enumerate(data.paths or ()):
        yield f"{prefix}.paths[{i}]", pattern, False
    if data.tokenizer != "bytes":
        yield f"{prefix}.tokenizer", data.tokenizer, False


def refused_paths(
    job: TrainingJob, namespace: str, folders: LocalFolders, uid: str = ""
) -> list[tuple[str, str]]:
    """(field path, why) for each local path of `job` outside what `namespace` may use.

    `uid` places relative paths in the job's own run folder when it is known; before the
    job is stored a stand-in of the same depth is used.
    """
    if not _NAMESPACE.match(namespace):
        return [("metadata.namespace", f"{namespace!r} is not a namespace name")]
    allowed = folders.allowed(namespace)
    run = run_paths(folders.state_dir, namespace, job.metadata.name, uid or _RUN_FOLDER_STAND_IN)
    refused = []
    for field, value, is_uri in local_path_fields(job):
        if is_uri and is_job_reference(value):
            continue  # another job's checkpoint: checked when that job was created
        try:
            # A worker expands `~` in data paths (data.resolve_paths): so does the check.
            path = (
                local_path(value, folders.pvc_mount_root)
                if is_uri
                else Path(os.path.expanduser(value))
            )
        except ContractError as e:
            refused.append((field, str(e)))
            continue
        if path is None:  # s3://: not on this machine
            continue
        resolved = (run.root / path).resolve()  # an absolute `path` replaces run.root
        if not any(resolved.is_relative_to(folder) for folder in allowed):
            plain = value in (str(resolved), f"file://{resolved}")
            shown = value if plain else f"{value} (that is {resolved})"
            refused.append(
                (
                    field,
                    f"{shown} is outside the folders namespace {namespace} may use: "
                    + ", ".join(str(f) for f in allowed)
                    + " (its run folders, and the roots of CARINA_LOCAL_ROOTS)",
                )
            )
    return refused
