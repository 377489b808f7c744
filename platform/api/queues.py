"""The queueing API (carina.dev/v1alpha1): ClusterQueue, LocalQueue, TrainingPriorityClass.

A cluster shared by teams gives each team a ClusterQueue: a nominal quota of GPUs (and RDMA
devices, CPU, memory) that its jobs may hold at once, in a cohort whose members lend each
other what they do not use. A namespace reaches its ClusterQueue through a LocalQueue; a
TrainingJob names its LocalQueue (`spec.queue`) and a TrainingPriorityClass. Field names and
meanings follow Kueue's (`kueue.x-k8s.io/v1beta2`) so a cluster that moves to Kueue maps one
to one; what Carina adds is the checkpoint a victim saves before its quota is released.

The admission decisions over these objects are `carina.platform.planning.queueing.schedule`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    PlainValidator,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from carina.platform.api.quantity import (
    NON_NEGATIVE_QUANTITY_PATTERN,
    parse_quantity,
)
from carina.platform.api.types import (
    GROUP,
    NAME_PATTERN,
    VERSION,
    Condition,
    ObjectMeta,
    quantity_check,
    quantity_schema,
)
from carina.workloads.config import ApiModel, CelRule

API_VERSION = f"{GROUP}/{VERSION}"

# The resources a quota can name: what a worker pod requests of its node.
GPU = "nvidia.com/gpu"
# The NVIDIA network operator's RDMA shared device plugin: what a Blue Vela worker requests.
RDMA = "rdma/rdma_shared_device_ib"
CPU = "cpu"
MEMORY = "memory"
PODS = "pods"
QUOTA_RESOURCES = (GPU, RDMA, CPU, MEMORY, PODS)


# A quota (0 is allowed: a queue that only borrows).
QuotaQuantity = Annotated[
    int | str,
    PlainValidator(quantity_check(0, NON_NEGATIVE_QUANTITY_PATTERN, "8, 500m or 2Ti")),
    WithJsonSchema(quantity_schema(0, NON_NEGATIVE_QUANTITY_PATTERN)),
    Field(description="a Kubernetes quantity, e.g. 64, 500m, 2Ti"),
]


class QueueingStrategy(StrEnum):
    # Only the head of the queue is tried; a head that does not fit blocks the rest.
    STRICT_FIFO = "StrictFIFO"
    # A job that does not fit is passed over for the next one that does.
    BEST_EFFORT_FIFO = "BestEffortFIFO"


class WithinClusterQueue(StrEnum):
    NEVER = "Never"
    LOWER_PRIORITY = "LowerPriority"
    LOWER_OR_NEWER_EQUAL_PRIORITY = "LowerOrNewerEqualPriority"


class ReclaimWithinCohort(StrEnum):
    NEVER = "Never"
    LOWER_PRIORITY = "LowerPriority"
    ANY = "Any"


class StopPolicy(StrEnum):
    NONE = "None"
    HOLD = "Hold"  # admit nothing new; admitted jobs run on
    HOLD_AND_DRAIN = "HoldAndDrain"  # admit nothing new and evict what is admitted


class ResourceQuota(ApiModel):
    """One resource's share of a ClusterQueue."""

    # Quotas are int-or-string: string() of either is a quantity Kubernetes' CEL can compare.
    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.lendingLimit) || quantity(string(self.lendingLimit))"
            ".compareTo(quantity(string(self.nominalQuota))) <= 0",
            "lendingLimit must not exceed nominalQuota",
            "lendingLimit",
        ),
    )

    name: Literal["nvidia.com/gpu", "rdma/rdma_shared_device_ib", "cpu", "memory", "pods"]
    nominal_quota: QuotaQuantity = Field(description="what this queue's jobs may always hold")
    borrowing_limit: QuotaQuantity | None = Field(
        None, description="the most it may borrow from its cohort above nominal; unset: no limit"
    )
    lending_limit: QuotaQuantity | None = Field(
        None, description="the most of its unused quota the cohort may borrow; unset: all of it"
    )

    @model_validator(mode="after")
    def _lend_at_most_nominal(self) -> ResourceQuota:
        if self.lending_limit is not None and parse_quantity(self.lending_limit) > parse_quantity(
            self.nominal_quota
        ):
            raise ValueError(self.CEL_RULES[0].message)
        return self


class LabelSelectorRequirement(ApiModel):
    key: str = Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(ApiModel):
    """Kubernetes label selector; `{}` selects every namespace."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or ():
            have = req.key in labels
            values = req.values or []
            if req.operator == "In" and (not have or labels[req.key] not in values):
                return False
            if req.operator == "NotIn" and have and labels[req.key] in values:
                return False
            if req.operator == "Exists" and not have:
                return False
            if req.operator == "DoesNotExist" and have:
                return False
        return True


class PreemptionPolicy(ApiModel):
    """Whom a pending job of this queue may preempt (Kueue's classic preemption)."""

    within_cluster_queue: WithinClusterQueue = WithinClusterQueue.NEVER
    reclaim_within_cohort: ReclaimWithinCohort = ReclaimWithinCohort.NEVER


class PodsReadyPolicy(ApiModel):
    """An admitted gang that is not all ready in time gives its quota back and waits again."""

    timeout_seconds: StrictInt = Field(600, ge=1, le=86400)
    backoff_base_seconds: StrictInt = Field(60, ge=0, le=86400)
    backoff_max_seconds: StrictInt = Field(3600, ge=0, le=604800)
    backoff_limit_count: StrictInt | None = Field(
        5, ge=0, description="requeues before the job is deactivated; unset: no limit"
    )


class ClusterQueueSpec(ApiModel):
    cohort: str | None = Field(None, max_length=63, pattern=NAME_PATTERN)
    namespace_selector: LabelSelector = Field(default_factory=LabelSelector)
    queueing_strategy: QueueingStrategy = QueueingStrategy.BEST_EFFORT_FIFO
    resources: list[ResourceQuota] = Field(
        min_length=1,
        max_length=len(QUOTA_RESOURCES),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    preemption: PreemptionPolicy = Field(default_factory=PreemptionPolicy)
    pods_ready: PodsReadyPolicy = Field(default_factory=PodsReadyPolicy)
    stop_policy: StopPolicy = StopPolicy.NONE
    max_checkpoint_grace_seconds: StrictInt = Field(
        900, ge=0, le=86400, description="the longest any victim may take to save before a kill"
    )

    @field_validator("resources")
    @classmethod
    def _one_quota_per_resource(cls, resources: list[ResourceQuota]) -> list[ResourceQuota]:
        # The CRD's list-map keyed by name refuses the same (`Duplicate value`).
        names = [r.name for r in resources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"each resource may be named once ({', '.join(twice)} is repeated)")
        return resources


class ResourceUsage(ApiModel):
    name: str
    nominal: float = 0
    reserved: float = 0  # held by admitted jobs (and victims until their workers are gone)
    borrowed: float = 0  # of `reserved`, the part above nominal


class ClusterQueueStatus(ApiModel):
    resources: list[ResourceUsage] = Field(default_factory=list)
    admitted_jobs: int = 0
    pending_jobs: int = 0
    conditions: list[Condition] = Field(default_factory=list)


class ClusterQueue(ApiModel):
    api_version: Literal["carina.dev/v1alpha1"] = "carina.dev/v1alpha1"
    kind: Literal["ClusterQueue"] = "ClusterQueue"
    metadata: ObjectMeta
    spec: ClusterQueueSpec
    status: ClusterQueueStatus | None = None


class LocalQueueSpec(ApiModel):
    cluster_queue: str = Field(max_length=63, pattern=NAME_PATTERN)
    stop_policy: StopPolicy = StopPolicy.NONE


class LocalQueueStatus(ApiModel):
    pending_jobs: int = 0
    admitted_jobs: int = 0


class LocalQueue(ApiModel):
    api_version: Literal["carina.dev/v1alpha1"] = "carina.dev/v1alpha1"
    kind: Literal["LocalQueue"] = "LocalQueue"
    metadata: ObjectMeta
    spec: LocalQueueSpec
    status: LocalQueueStatus | None = None


class TrainingPriorityClass(ApiModel):
    """A named priority (Kueue's WorkloadPriorityClass); higher values go first and preempt."""

    api_version: Literal["carina.dev/v1alpha1"] = "carina.dev/v1alpha1"
    kind: Literal["TrainingPriorityClass"] = "TrainingPriorityClass"
    metadata: ObjectMeta
    value: StrictInt = Field(ge=-1_000_000_000, le=1_000_000_000)
    description: str = Field("", max_length=1024)


KINDS: dict[str, type[Any]] = {
    "ClusterQueue": ClusterQueue,
    "LocalQueue": LocalQueue,
    "TrainingPriorityClass": TrainingPriorityClass,
}
