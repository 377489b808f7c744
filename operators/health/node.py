"""The verdict on the Node: labels, the CarinaHealthy condition, and the API calls that write them.

Labels (`carina.dev/health`, `carina.dev/health-check`, `carina.dev/health-full-pass`) go in a
merge patch of the Node; the condition in a strategic merge patch of `nodes/status`, which
merges conditions by type, so the kubelet's (or kwok's) own conditions stay as they are, and
theirs, which kwok writes the same way, leave ours alone. Either is written only when it would
change; the condition's lastHeartbeatTime is also renewed every `HEARTBEAT_SECONDS`, so a
reader can tell a live agent's verdict from a dead one's. lastTransitionTime moves only when
the status does.

The patch builders are pure; `NodeApi` is the thin layer of calls (the kubernetes client with
`_preload_content=False`, as in `carina.operators.runtime.kube`, so answers stay JSON).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from carina.operators.health.checks import ApiReading
from carina.operators.health.schedule import parse_time
from carina.operators.health.verdict import Verdict
from carina.operators.runtime.kube import MERGE_PATCH
from carina.platform.api.health import (
    CONDITION_REASONS,
    CONDITION_TYPE,
    FULL_PASS_LABEL,
    HEALTH_CHECK_LABEL,
    HEALTH_LABEL,
    Health,
)

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
HEARTBEAT_SECONDS = 300.0


def timestamp(unix: float) -> str:
    """A Kubernetes time (RFC 3339, whole seconds, UTC)."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NodeView:
    """What the agent reads of its Node."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    condition: Mapping[str, Any] | None  # the CarinaHealthy condition it carries, if any


def node_view(node: Mapping[str, Any]) -> NodeView:
    meta = node.get("metadata") or {}
    conditions = (node.get("status") or {}).get("conditions") or []
    ours = next((c for c in conditions if c.get("type") == CONDITION_TYPE), None)
    return NodeView(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        condition=ours,
    )


def label_patch(
    view: NodeView, verdict: Verdict, full_pass_at: int | None
) -> dict[str, Any] | None:
    """The merge patch of the Node's labels, None when they already say this."""
    want = {HEALTH_LABEL: verdict.health.value, HEALTH_CHECK_LABEL: verdict.check}
    if full_pass_at is not None:
        want[FULL_PASS_LABEL] = str(full_pass_at)
    changed = {key: value for key, value in want.items() if view.labels.get(key) != value}
    return {"metadata": {"labels": changed}} if changed else None


def condition_for(
    verdict: Verdict, previous: Mapping[str, Any] | None, now: float
) -> dict[str, Any]:
    """The CarinaHealthy condition for this verdict (lastTransitionTime kept if status is)."""
    status = "True" if verdict.health is Health.PASS else "False"
    since = timestamp(now)
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        since = str(previous["lastTransitionTime"])
    return {
        "type": CONDITION_TYPE,
        "status": status,
        "reason": CONDITION_REASONS[verdict.health],
        "message": verdict.message,
        "lastHeartbeatTime": timestamp(now),
        "lastTransitionTime": since,
    }


def condition_patch(
    view: NodeView, verdict: Verdict, now: float, heartbeat_s: float = HEARTBEAT_SECONDS
) -> dict[str, Any] | None:
    """The strategic merge patch of nodes/status, None when nothing changed and the last
    heartbeat is recent."""
    previous = view.condition
    condition = condition_for(verdict, previous, now)
    if previous and all(previous.get(k) == condition[k] for k in ("status", "reason", "message")):
        beat = parse_time(str(previous.get("lastHeartbeatTime") or ""))
        if beat is not None and now - beat < heartbeat_s:
            return None
    return {"status": {"conditions": [condition]}}


def clock_skew(sent: float, received: float, date_header: str | None) -> float | None:
    """This machine's clock minus the server's, from a `Date` header (whole seconds: the
    server's time lies in [Date, Date + 1), so its middle is taken)."""
    if not date_header:
        return None
    try:
        server = parsedate_to_datetime(date_header).timestamp() + 0.5
    except (TypeError, ValueError):
        return None
    return (sent + received) / 2 - server


class NodeApi:
    """The agent's calls: read its Node, list the pods bound to it, patch labels and status."""

    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)

    def read(self, name: str) -> tuple[dict[str, Any] | None, ApiReading]:
        """The Node (None if it could not be read) and what the read says of the API server."""
        sent = time.time()
        try:
            resp = self.core.read_node(name, _preload_content=False)
            body = json.loads(resp.data)
        except ApiException as exc:
            return None, ApiReading(error=f"reading node {name}: {exc.status} {exc.reason}")
        except (HTTPError, OSError, ValueError) as exc:
            return None, ApiReading(error=f"reading node {name}: {exc}")
        received = time.time()
        skew = clock_skew(sent, received, resp.headers.get("Date"))
        return body, ApiReading(error=None, latency_s=received - sent, skew_s=skew)

    def pods_on(self, name: str) -> list[dict[str, Any]]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={name}", _preload_content=False
        )
        return list(json.loads(resp.data).get("items") or [])

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        self.core.patch_node(name, patch, _content_type=MERGE_PATCH, _preload_content=False)

    def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        self.core.patch_node_status(
            name, patch, _content_type=STRATEGIC_MERGE_PATCH, _preload_content=False
        )
