"""/api/v1/clusterqueues (list, get) and /api/v1/namespaces/{namespace}/localqueues (list).

ClusterQueues are cluster-scoped: reading them needs `list`/`get` on `clusterqueues` (on the
embedded platform every token may read its one queue, `this-machine`). A ClusterQueue's
pending list names jobs of other namespaces, so it shows only those of namespaces where the
caller may list TrainingJobs; `pendingJobs` still counts them all.
"""

from __future__ import annotations

from fastapi import APIRouter

from carina.platform.controlplane.backends.base import Backend, Principal
from carina.platform.controlplane.deps import (
    BackendDep,
    MayGetClusterQueue,
    MayListClusterQueues,
    MayListLocalQueues,
    QueueNamePath,
)
from carina.platform.controlplane.routers.errors import ERROR_RESPONSES, http_errors
from carina.platform.controlplane.schemas import (
    ClusterQueueDetail,
    ClusterQueueList,
    LocalQueueList,
    PendingJob,
)

router = APIRouter(prefix="/api/v1", tags=["queues"], responses=ERROR_RESPONSES)


@router.get("/clusterqueues", response_model=ClusterQueueList)
async def list_cluster_queues(_: MayListClusterQueues, backend: BackendDep) -> ClusterQueueList:
    """Every ClusterQueue: cohort, strategy, quota and usage per resource, job counts."""
    with http_errors():
        return await backend.cluster_queues()


@router.get("/clusterqueues/{name}", response_model=ClusterQueueDetail)
async def get_cluster_queue(
    principal: MayGetClusterQueue, name: QueueNamePath, backend: BackendDep
) -> ClusterQueueDetail:
    """One ClusterQueue and the jobs waiting in it, in order, each with why it waits."""
    with http_errors():
        detail = await backend.cluster_queue(name)
        detail.pending = await _visible(detail.pending, principal, backend)
    return detail


@router.get("/namespaces/{namespace}/localqueues", response_model=LocalQueueList)
async def list_local_queues(namespace: MayListLocalQueues, backend: BackendDep) -> LocalQueueList:
    """The LocalQueues of a namespace: their ClusterQueue and job counts."""
    with http_errors():
        return await backend.local_queues(namespace)


async def _visible(
    pending: list[PendingJob], principal: Principal, backend: Backend
) -> list[PendingJob]:
    """The pending jobs of namespaces where the caller may list TrainingJobs."""
    allowed = {
        ns: await backend.authorize(principal, ns, "list")
        for ns in sorted({p.namespace for p in pending})
    }
    return [p for p in pending if allowed[p.namespace]]
