"""/api/v1/namespaces/{namespace}/trainingjobs/{name}/sweep: a sweep job's report.

The sweep's driver writes `sweep/report.json` and `sweep/report.md` under the job's checkpoint
URI when it finishes (`carina.workloads.sweep.report`); this route reads those files, no Ray
needed. Where they are: the job's `spec.checkpoint.uri`, else on the embedded platform the
run folder's `checkpoints/`, else (a cluster's default root) the folder `status.lastCheckpoint`
names. A local path, `file://` or `pvc://` (under the control plane's PVC mount root) is read
from disk; an `s3://` report with boto3 (the `server` extra), with the credentials and endpoint
of the control plane's environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL`: on a cluster, the chart's `controlPlane.extraEnv` from the checkpoint
store's Secret).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from carina.platform.controlplane.backend_errors import NotFound
from carina.platform.controlplane.deps import BackendDep, MayGet, NamePath, SettingsDep
from carina.platform.controlplane.routers.errors import ERROR_RESPONSES, http_errors
from carina.platform.controlplane.settings import Settings
from carina.platform.embedded.launcher import run_paths
from carina.workloads.contract import ContractError, local_path

router = APIRouter(
    prefix="/api/v1/namespaces/{namespace}/trainingjobs",
    tags=["sweeps"],
    responses=ERROR_RESPONSES,
)

REPORT_DIR = "sweep"
REPORT_FILES = {"json": "report.json", "markdown": "report.md"}


def report_root(job: dict[str, Any], settings: Settings) -> str | None:
    """The checkpoint URI a sweep job's report lies under (None when unknown yet)."""
    spec = job.get("spec") or {}
    uri = (spec.get("checkpoint") or {}).get("uri")
    if isinstance(uri, str) and uri:
        return uri.rstrip("/")
    meta = job.get("metadata") or {}
    if settings.backend == "local":
        paths = run_paths(
            settings.resolved_state_dir(),
            str(meta.get("namespace") or "default"),
            str(meta.get("name")),
            str(meta.get("uid") or ""),
        )
        return paths.checkpoints.resolve().as_uri()
    last = ((job.get("status") or {}).get("lastCheckpoint") or {}).get("uri")
    if isinstance(last, str) and last.rstrip("/").endswith(f"/{REPORT_DIR}"):
        return last.rstrip("/").removesuffix(f"/{REPORT_DIR}")
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def read_s3(uri: str) -> str | None:
    """The text of the object at `s3://bucket/key`; None when there is no such object.

    Blocking (boto3): the route runs it in a thread. Other failures (no credentials, no
    bucket, the store unreachable) raise NotFound naming the URI and what the store said.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
        return str(body.read().decode())
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404"):
            return None
        raise NotFound(f"{uri}: the checkpoint store said {code or exc}") from None
    except BotoCoreError as exc:
        raise NotFound(f"{uri}: the checkpoint store cannot be read ({exc})") from None


@router.get(
    "/{name}/sweep",
    responses={
        200: {
            "content": {"application/json": {}, "text/markdown": {}},
            "description": "the sweep's report: per (batch, tokens) the best lr, the power "
            "law's fit with its intervals, the Power-scheduler settings it recommends",
        }
    },
)
async def sweep_report(
    namespace: MayGet,
    name: NamePath,
    backend: BackendDep,
    settings: SettingsDep,
    format: Annotated[
        Literal["json", "markdown"], Query(description="the JSON report or its Markdown page")
    ] = "json",
) -> Response:
    """A sweep job's report; 404 while the sweep has not written one, or for another kind."""
    with http_errors():
        job = json.loads(await backend.get(namespace, name))
        workload = (job.get("spec") or {}).get("workload") or {}
        if "sweep" not in workload:
            kinds = ", ".join(sorted(workload)) or "none"
            raise NotFound(f"trainingjob {name} is not a sweep (its workload: {kinds})")
        root = report_root(job, settings)
        if root is None:
            raise NotFound(f"sweep {name} has no report yet: its checkpoint location is unknown")
        uri = f"{root}/{REPORT_DIR}/{REPORT_FILES[format]}"
        try:
            path = local_path(uri)
        except ContractError as exc:
            raise NotFound(f"sweep {name}: {exc}") from exc
        if path is not None:
            text = await asyncio.to_thread(_read, path)
        elif uri.startswith("s3://"):
            text = await asyncio.to_thread(read_s3, uri)
        else:
            raise NotFound(f"sweep {name}: the report lies at {uri}; read it there")
        if text is None:
            raise NotFound(f"sweep {name} has no report yet (it is written at {uri})")
    media = "application/json" if format == "json" else "text/markdown"
    return Response(text, media_type=media)
