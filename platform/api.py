"""The TrainingJob API (carina.dev/v1alpha1): the one typed source of truth.

The CRD under helm/carina/crds/ is generated from these models (see `crd.py`); the
operator, the control plane, the embedded substrate and `carina validate` all parse
manifests with them. Cross-field rules live in each model's `CEL_RULES` (for the API
server) and in a validator beside it (for local validation).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from carina.workloads.config import (
    PERMANENT_EXIT_CODES,
    WORKLOAD_KINDS,
    CelRule,
    CheckpointUri,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    QuantizeConfig,
    Spec,
    WorkloadConfig,
)

GROUP = "carina.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
SINGULAR = "trainingjob"
SHORT_NAMES = ("tj",)

# Worker pods are named <job>-worker-<index>; 63 (a label value, a DNS label) minus the
# suffix for up to 9,999 workers leaves 50 characters for the job's own name.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 50

Quantity = Annotated[
    int | str,
    Field(description="a Kubernetes quantity, e.g. 4, 500m, 16Gi"),
]


class ClusterProfile(StrEnum):
    """Which kind of GPU cluster the job runs on; decides placement and network setup."""

    VELA = "vela"  # cloud VMs, 8x A100, RoCE over SR-IOV, multi-tenant
    BLUE_VELA = "blue-vela"  # on-prem SuperPOD, 8x H100, InfiniBand
    NONE = "none"  # plain nodes, CPU or GPU, no fabric setup


class Workload(Spec):
    """Exactly one member is set: the kind of work the job does."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "[has(self.pretrain), has(self.finetune), has(self.quantize), has(self.evaluate)]"
            ".filter(x, x).size() == 1",
            "exactly one of pretrain, finetune, quantize, evaluate must be set",
        ),
    )

    pretrain: PretrainConfig | None = None
    finetune: FinetuneConfig | None = None
    quantize: QuantizeConfig | None = None
    evaluate: EvaluateConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Workload:
        if len(self.kinds()) != 1:
            raise ValueError(self.CEL_RULES[0].message)
        return self

    def kinds(self) -> list[str]:
        """Names of the members that are set (one, for a valid workload)."""
        return [k for k in WORKLOAD_KINDS if getattr(self, k) is not None]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def config(self) -> WorkloadConfig:
        value = getattr(self, self.kind)
        assert value is not None
        return value


class Resources(Spec):
    """What one worker asks of its node."""

    gpus: int = Field(0, ge=0, le=16, description="GPUs per worker")
    cpu: Quantity = "1"
    memory: Quantity = "2Gi"


class CheckpointSpec(Spec):
    """Where and how often workers save checkpoints."""

    uri: CheckpointUri | None = Field(
        None, description="where checkpoints go; defaults to the platform's storage"
    )
    interval_steps: int = Field(100, ge=1, description="save every N optimizer steps")
    keep: int = Field(3, ge=1, le=1000, description="newest checkpoints to keep")


class FailurePolicy(Spec):
    """When a failed worker restarts the gang and when the job gives up."""

    max_restarts: int = Field(3, ge=0, le=1000)
    backoff_seconds: int = Field(10, ge=0, le=3600, description="first restart delay; doubles")
    max_backoff_seconds: int = Field(300, ge=0, le=86400)
    permanent_exit_codes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=lambda: [int(c) for c in PERMANENT_EXIT_CODES],
        max_length=64,
        description="worker exit codes that fail the job at once",
    )


class TrainingJobSpec(Spec):
    """What a user asks for."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.cluster == 'none' || (has(self.resources) && self.resources.gpus > 0)",
            "resources.gpus must be at least 1 on the vela and blue-vela profiles",
            "resources.gpus",
        ),
    )

    workload: Workload
    replicas: int = Field(1, ge=1, le=4096, description="worker count")
    resources: Resources = Field(default_factory=Resources)
    image: str | None = Field(None, max_length=512, description="defaults to the operator's")
    cluster: ClusterProfile = ClusterProfile.NONE
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    suspend: bool = False
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1)
    queue: str | None = Field(None, max_length=63, pattern=NAME_PATTERN)
    priority: int = Field(0, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _gpus_for_profiles(self) -> TrainingJobSpec:
        if self.cluster != ClusterProfile.NONE and self.resources.gpus < 1:
            raise ValueError(self.CEL_RULES[0].message)
        return self


# ---------------------------------------------------------------- status


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


FINISHED_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class Condition(Spec):
    """A Kubernetes-style condition; reasons come from `carina.platform.reasons`."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(None, ge=0)


class WorkerCounts(Spec):
    total: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0


class Progress(Spec):
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    updated_at: datetime | None = None


class CheckpointStatus(Spec):
    step: int
    uri: str
    time: datetime | None = None


class RestartCounts(Spec):
    """Restarts by whose fault they were: the user's code, or the infrastructure."""

    application: int = 0
    infrastructure: int = 0
    preemption: int = 0


class TrainingJobStatus(Spec):
    """What the platform observed; written only by the platform."""

    phase: Phase = Phase.PENDING
    workload: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    workers: WorkerCounts = Field(default_factory=WorkerCounts)
    restarts: int = 0
    restarts_by_reason: RestartCounts = Field(default_factory=RestartCounts)
    restart_not_before: datetime | None = Field(
        None, description="while Restarting: the new workers start no earlier (backoff)"
    )
    start_time: datetime | None = None
    completion_time: datetime | None = None
    progress: Progress | None = None
    last_checkpoint: CheckpointStatus | None = None
    observed_generation: int | None = None


# ---------------------------------------------------------------- the object


class ObjectMeta(Spec):
    """The parts of Kubernetes object metadata Carina reads; the rest passes through."""

    model_config = Spec.model_config | {"extra": "allow"}

    name: str = Field(max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)
    namespace: str | None = Field(None, max_length=63, pattern=NAME_PATTERN)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    resource_version: str | None = None


class TrainingJob(Spec):
    """A TrainingJob manifest as a user writes it (status optional)."""

    api_version: Literal["carina.dev/v1alpha1"] = "carina.dev/v1alpha1"
    kind: Literal["TrainingJob"] = "TrainingJob"
    metadata: ObjectMeta
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None

    @classmethod
    def parse(cls, manifest: dict[str, Any]) -> TrainingJob:
        """Validate a manifest (dict) into a TrainingJob; raises pydantic.ValidationError."""
        return cls.model_validate(manifest)
