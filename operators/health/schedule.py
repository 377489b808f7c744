"""When the invasive checks may run: only on an idle node, and only when a full run is due.

Idle: no pod bound to the node that requests `nvidia.com/gpu` and has not finished (Succeeded
or Failed). The agent itself requests no GPU (it sees them through NVIDIA_VISIBLE_DEVICES=all),
so it never keeps its own node busy. A job placed on the node while a probe runs shares the
GPUs with it for the probe's few seconds; the next round sees the node busy.

Due: the node's `carina.dev/health-check-requested` annotation holds a time newer than the last
full run (the operator sets it on a straggler's node, a person with kubectl annotate); or,
unless `full_interval` is 0 (requests only), no full run since the agent started and no
`carina.dev/health-full-pass` stamp on the node, or the last full run is `full_interval`
seconds old.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
FINISHED_PHASES = ("Succeeded", "Failed")


def _requests_gpu(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            value = str((resources.get(part) or {}).get(GPU_RESOURCE, "0")).strip()
            if value not in ("", "0"):
                return True
    return False


def gpu_pods(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """namespace/name of the pods that hold the node's GPUs (asked for and not finished)."""
    return [
        f"{p['metadata'].get('namespace', '')}/{p['metadata']['name']}"
        for p in pods
        if (p.get("status") or {}).get("phase") not in FINISHED_PHASES and _requests_gpu(p)
    ]


def parse_time(value: str | None) -> float | None:
    """Unix seconds of an RFC 3339 time or of a number of seconds; None when neither."""
    if not value:
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone could mean anything
    return moment.timestamp()


def full_run_due(
    now: float, last_full: float | None, full_interval: float, requested_at: float | None
) -> str | None:
    """Why a full run is due now (None: it is not)."""
    if requested_at is not None and (last_full is None or requested_at > last_full):
        return "requested"
    if full_interval <= 0:
        return None
    if last_full is None:
        return "never run"
    if now - last_full >= full_interval:
        return "interval"
    return None
