"""Every kopf handler of the TrainingJob operator, in one place; each is a line or two.

kopf watches TrainingJobs, their worker pods and the Nodes, and hands each event to the Operator
(operator.py), which queues the job for a reconcile (reconcile.py). It also watches what the
admission writer reads (ClusterQueues, LocalQueues, TrainingPriorityClasses, Namespaces), which
only updates the cache. No change handlers: they
would make kopf store its own state in annotations, one more write per event.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf

from carina.operators.runtime.settings import Settings
from carina.operators.trainingjob.operator import Operator
from carina.platform.api.types import GROUP, PLURAL, VERSION
from carina.platform.planning.observed import JOB_LABEL


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No change handlers, so no diffs: skip kopf's per-event deep copy of every body.

    kopf builds each event's "essence" (a deep copy of the whole object) to detect changes for
    change handlers; with only event handlers that is a third of the operator's CPU at scale
    (bench/operator_scale.py).
    """

    def build(
        self,
        *,
        body: kopf.Body,  # noqa: ARG002 (kopf passes these by keyword)
        extra_fields: Any = None,  # noqa: ARG002
    ) -> kopf.BodyEssence:
        return None  # type: ignore[return-value]

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:  # noqa: ARG002
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def configure(settings: kopf.OperatorSettings, config: Settings) -> None:
    """kopf's settings for this operator."""
    settings.posting.level = logging.WARNING  # kopf's own events: only its errors
    settings.peering.priority = config.priority
    settings.peering.lifetime = config.peering_lifetime
    settings.watching.server_timeout = 300
    settings.persistence.diffbase_storage = _NoDiffBase()
    # The API server sends only worker pods: on a shared cluster the others' events are never
    # transferred or decoded (the handler's own label filter is applied after both).
    settings.watching.label_selectors["", "v1", "pods"] = JOB_LABEL


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = Settings.from_env()
    configure(settings, config)
    memo.operator = Operator(config)
    await memo.operator.start()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "operator", None) is not None:
        await memo.operator.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_job_event(type, cast(dict[str, Any], event["object"]))


@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
async def pod_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_pod_event(type, cast(dict[str, Any], event["object"]))


@kopf.on.event("", "v1", "nodes")
async def node_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_node_event(type, cast(dict[str, Any], event["object"]))


@kopf.on.event(GROUP, VERSION, "clusterqueues")
async def cluster_queue_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_queueing_event("clusterqueues", type, cast(dict[str, Any], event["object"]))


@kopf.on.event(GROUP, VERSION, "localqueues")
async def local_queue_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_queueing_event("localqueues", type, cast(dict[str, Any], event["object"]))


@kopf.on.event(GROUP, VERSION, "trainingpriorityclasses")
async def priority_class_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_queueing_event(
        "trainingpriorityclasses", type, cast(dict[str, Any], event["object"])
    )


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(type: str, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    memo.operator.on_queueing_event("namespaces", type, cast(dict[str, Any], event["object"]))
