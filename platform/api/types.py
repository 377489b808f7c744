"""The TrainingJob API (carina.dev/v1alpha1): the one typed source of truth.

The CRD under helm/carina/crds/ is generated from these models (see `crd.py`); the
operator, the control plane, the embedded substrate and `carina validate` all parse
manifests with them. Cross-field rules live in each model's `CEL_RULES` (for the API
server) and in a validator beside it (for local validation).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from carina.platform.api.labels import (
    DNS_SUBDOMAIN,
    NAME_PART,
    LabelValue,
    check_annotations,
    check_labels,
    qualified_name_problem,
)
from carina.platform.api.quantity import POSITIVE_QUANTITY_PATTERN, QUANTITY_MAX_LENGTH
from carina.platform.api.spec_changes import SPEC_CHANGE_RULES
from carina.workloads.config import (
    JOB_REFERENCE_PREFIX,
    PERMANENT_EXIT_CODES,
    PRINTABLE,
    PRINTABLE_PATTERN,
    WORKLOAD_KINDS,
    ApiModel,
    CelRule,
    CheckpointUri,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
    QuantizeConfig,
    SweepConfig,
    VisionConfig,
    WorkloadConfig,
    job_reference_fields,
    no_control_characters,
)
from carina.workloads.contract import (
    CONTRACT_ENV,
    DEFAULT_PVC_MOUNT_ROOT,
    DEFAULT_TERMINATION_LOG,
    PVC_MOUNT_ROOT_ENV,
    SPEC_DIR,
)

GROUP = "carina.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
SINGULAR = "trainingjob"
SHORT_NAMES = ("tj",)

# Worker host names are <job>-worker-<index>; 63 (a label value, a DNS label) minus the
# suffix for up to 9,999 workers leaves 50 characters for the job's own name.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 50
JobName = Annotated[str, Field(max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]


def quantity_check(
    minimum: Literal[0, 1], pattern: str, examples: str
) -> Callable[[object], int | str]:
    """The validator of a Kubernetes quantity field: an integer of at least `minimum`, or a
    string matching `pattern`; the error names the rule and shows the value."""
    what = "greater than zero" if minimum else "of at least 0"

    def check(value: object) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        if (
            isinstance(value, str)
            and len(value) <= QUANTITY_MAX_LENGTH
            and re.fullmatch(pattern, value)
        ):
            return value
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ValueError(f"must be a Kubernetes quantity {what}, such as {examples} (got {shown})")

    return check


def quantity_schema(minimum: Literal[0, 1], pattern: str) -> dict[str, Any]:
    """The same rule as the CRD states it (an int-or-string)."""
    return {
        "anyOf": [
            {"type": "integer", "minimum": minimum},
            {"type": "string", "maxLength": QUANTITY_MAX_LENGTH, "pattern": pattern},
        ]
    }


# A cpu or memory request.
Quantity = Annotated[
    int | str,
    PlainValidator(quantity_check(1, POSITIVE_QUANTITY_PATTERN, "4, 500m or 16Gi")),
    WithJsonSchema(quantity_schema(1, POSITIVE_QUANTITY_PATTERN)),
    Field(description="a Kubernetes quantity greater than zero, e.g. 4, 500m, 16Gi"),
]


class ClusterProfile(StrEnum):
    """Which kind of GPU cluster the job runs on; decides placement and network setup."""

    VELA = "vela"  # cloud VMs, 8x A100, RoCE over SR-IOV, multi-tenant
    BLUE_VELA = "blue-vela"  # on-prem SuperPOD, 8x H100, InfiniBand
    NONE = "none"  # plain nodes, CPU or GPU, no fabric setup


class Workload(ApiModel):
    """Exactly one member is set: the kind of work the job does."""

    # The rule in the schema too, for clients and fuzzers that read the OpenAPI document.
    model_config = ApiModel.model_config | {
        "json_schema_extra": {"minProperties": 1, "maxProperties": 1}
    }

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "[has(self.pretrain), has(self.finetune), has(self.quantize), has(self.evaluate),"
            " has(self.vision), has(self.sweep)].filter(x, x).size() == 1",
            "exactly one of pretrain, finetune, quantize, evaluate, vision, sweep must be set",
        ),
    )

    pretrain: PretrainConfig | None = None
    finetune: FinetuneConfig | None = None
    quantize: QuantizeConfig | None = None
    evaluate: EvaluateConfig | None = None
    vision: VisionConfig | None = None
    sweep: SweepConfig | None = None

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
        value: WorkloadConfig | None = getattr(self, self.kind)
        assert value is not None
        return value


class Resources(ApiModel):
    """What one worker asks of its node."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.ranksPerWorker) || self.gpus == 0 || self.ranksPerWorker == self.gpus",
            "ranksPerWorker must equal gpus on a GPU worker (one rank per GPU)",
            "ranksPerWorker",
        ),
    )

    gpus: StrictInt = Field(
        0, ge=0, le=16, description="GPUs per worker; the worker runs a rank on each"
    )
    ranks_per_worker: StrictInt | None = Field(
        None,
        ge=1,
        le=256,
        description="ranks (processes) per worker: the GPU count on a GPU worker, else 1 "
        "unless set (CPU clusters, tests)",
    )
    cpu: Quantity = "1"
    memory: Quantity = "2Gi"

    @model_validator(mode="after")
    def _ranks_match_gpus(self) -> Resources:
        if self.gpus and self.ranks_per_worker not in (None, self.gpus):
            raise ValueError(self.CEL_RULES[0].message)
        return self


class CheckpointSpec(ApiModel):
    """Where and how often workers save checkpoints."""

    uri: CheckpointUri | None = Field(
        None, description="where checkpoints go; defaults to the platform's storage"
    )
    interval_steps: StrictInt = Field(100, ge=1, description="save every N optimizer steps")
    keep: StrictInt = Field(3, ge=1, le=1000, description="newest checkpoints to keep")


class PreemptionSpec(ApiModel):
    """How this job leaves when a higher-priority job needs its quota."""

    checkpoint_grace_period_seconds: StrictInt | None = Field(
        None,
        ge=0,
        le=86400,
        description="time every rank has to save after SIGTERM before it is killed; unset: "
        "the operator's default, capped by the ClusterQueue's maxCheckpointGraceSeconds",
    )
    min_runtime_seconds: StrictInt = Field(
        0, ge=0, le=604800, description="after admission, the job cannot be preempted this long"
    )


class PreflightSpec(ApiModel):
    """Whether the gang starts only on nodes that recently passed the full health checks."""

    required: StrictBool | None = Field(
        None,
        description="start only on nodes whose invasive health checks (GPU bandwidth, "
        "all-reduce, diagnostics) passed within maxAgeSeconds; unset: the operator's rule "
        "(jobs of at least its preflightMinGpus GPUs)",
    )
    max_age_seconds: StrictInt = Field(
        21600, ge=60, le=2592000, description="how recent a node's passing full check must be"
    )


class StallPolicy(ApiModel):
    """When a Running job whose step stopped advancing is stalled, and what then.

    Stalled: no step for more than `factor` x its median step time (and at least
    `minSeconds`), or no step at all for `startupSeconds` after its workers started running.
    """

    factor: StrictFloat = Field(
        10,
        ge=2,
        le=1000,
        description="stalled after this many median step times without a step",
    )
    min_seconds: StrictInt = Field(
        60,
        ge=1,
        le=86400,
        description="never stalled sooner than this after the last step (longer than a"
        " checkpoint save takes)",
    )
    startup_seconds: StrictInt = Field(
        1800,
        ge=1,
        le=604800,
        description="stalled when the running workers log no step for this long (loading"
        " data, a checkpoint and the first step); also the limit while no median step time"
        " is known",
    )
    restart: StrictBool = Field(
        True,
        description="restart a stalled gang from its checkpoint, counted as an application"
        " restart (maxRestarts, backoff); false: only say so",
    )


class StragglerPolicy(ApiModel):
    """When a rank's step time makes it a straggler."""

    factor: StrictFloat = Field(
        1.5,
        ge=1.05,
        le=100,
        description="a rank whose compute time per step exceeds the median rank's by this"
        " factor (and by a robust margin) is named a straggler",
    )


class FailurePolicy(ApiModel):
    """When a failed worker restarts the gang and when the job gives up."""

    max_restarts: StrictInt = Field(3, ge=0, le=1000)
    backoff_seconds: StrictInt = Field(
        10, ge=0, le=3600, description="first restart delay; doubles"
    )
    max_backoff_seconds: StrictInt = Field(300, ge=0, le=86400)
    permanent_exit_codes: list[Annotated[StrictInt, Field(ge=1, le=255)]] = Field(
        default_factory=lambda: [int(c) for c in PERMANENT_EXIT_CODES],
        max_length=64,
        description="worker exit codes that fail the job at once",
    )
    stall: StallPolicy = Field(default_factory=StallPolicy)
    straggler: StragglerPolicy = Field(default_factory=StragglerPolicy)


# ---------------------------------------------------------------- the worker pod template

# What the platform owns in a worker pod. A template may set none of it: the models refuse it
# for `carina validate` and their CEL rules for the API server; the renderer builds pods with
# the same names.
RESERVED_ENV = tuple(sorted(CONTRACT_ENV | {PVC_MOUNT_ROOT_ENV}))
RESERVED_LABEL_PREFIX = f"{GROUP}/"
SPEC_VOLUME = "spec"  # the workload spec (a downward-API file) at SPEC_DIR
SHM_VOLUME = "dshm"  # shared memory for dataloader workers and NCCL, at SHM_DIR
SHM_DIR = "/dev/shm"
RESERVED_VOLUMES = (SPEC_VOLUME, SHM_VOLUME)
RESERVED_VOLUME_PREFIX = "carina-"  # the volumes of pvc:// claims are carina-pvc-<claim>
RESERVED_MOUNT_DIRS = (SPEC_DIR, SHM_DIR, DEFAULT_PVC_MOUNT_ROOT, DEFAULT_TERMINATION_LOG)

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# A Kubernetes object kept as it is written (an EnvVarSource, an affinity term): the API
# server checks it when it creates the pod.
KubernetesObject = dict[str, Any]


def _cel_strings(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _list_map(*keys: str) -> dict[str, Any]:
    """A list whose items are unique by `keys`, as Kubernetes' own lists of named things."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def _unique(items: list[Any] | None, key: str, what: str) -> None:
    seen: set[str] = set()
    for item in items or ():
        value = getattr(item, key)
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


class EnvVar(ApiModel):
    """An environment variable of the worker container (Kubernetes' EnvVar)."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"!(self.name in {_cel_strings(RESERVED_ENV)})",
            "name is reserved by the worker contract (" + ", ".join(RESERVED_ENV) + ")",
            "name",
        ),
    )

    name: str = Field(max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = Field(None, max_length=32768)
    value_from: KubernetesObject | None = Field(
        None, description="Kubernetes' EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef ..."
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_ENV:
            raise ValueError(cls.CEL_RULES[0].message)
        return name


class EnvSourceRef(ApiModel):
    """The Secret or ConfigMap whose keys become environment variables."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    optional: StrictBool | None = None


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as an environment variable (Kubernetes' EnvFromSource)."""

    # The keys are not known at admission, so only the prefix is checked. A key that names a
    # variable the renderer sets loses to the renderer's value (Kubernetes lets `env` win over
    # `envFrom`); one that names a reserved variable the renderer leaves unset, such as
    # CARINA_TERMINATION_LOG, reaches the worker. Keep reserved names out of such Secrets.

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "has(self.secretRef) != has(self.configMapRef)",
            "exactly one of secretRef, configMapRef must be set",
        ),
        CelRule(
            "!has(self.prefix) || self.prefix == '' "
            f"|| !{_cel_strings(RESERVED_ENV)}.exists(n, n.startsWith(self.prefix))",
            "prefix must not begin a name the worker contract reserves",
            "prefix",
        ),
    )

    prefix: str | None = Field(None, max_length=128, pattern=r"^([-._a-zA-Z][-._a-zA-Z0-9]*)?$")
    secret_ref: EnvSourceRef | None = None
    config_map_ref: EnvSourceRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError(self.CEL_RULES[0].message)
        return self

    @field_validator("prefix")
    @classmethod
    def _prefix_not_reserved(cls, prefix: str | None) -> str | None:
        if prefix and any(name.startswith(prefix) for name in RESERVED_ENV):
            raise ValueError(cls.CEL_RULES[1].message)
        return prefix


class Volume(ApiModel):
    """A pod volume: a name and one Kubernetes volume source (persistentVolumeClaim, secret ...)."""

    # The source passes to the pod as written; the API server checks it when the pod is created.

    model_config = ApiModel.model_config | {"extra": "allow"}

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"!(self.name in {_cel_strings(RESERVED_VOLUMES)}) "
            f"&& !self.name.startsWith('{RESERVED_VOLUME_PREFIX}')",
            f"name is Carina's ({', '.join(RESERVED_VOLUMES)} and names beginning "
            f"{RESERVED_VOLUME_PREFIX} are reserved)",
            "name",
        ),
    )

    name: str = Field(max_length=63, pattern=NAME_PATTERN)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_VOLUMES or name.startswith(RESERVED_VOLUME_PREFIX):
            raise ValueError(cls.CEL_RULES[0].message)
        return name


class VolumeMount(ApiModel):
    """Where the worker container sees a volume of the template (Kubernetes' VolumeMount)."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"!{_cel_strings(RESERVED_MOUNT_DIRS)}"
            ".exists(d, self.mountPath == d || self.mountPath.startsWith(d + '/'))",
            "mountPath is Carina's (it mounts " + ", ".join(RESERVED_MOUNT_DIRS) + ")",
            "mountPath",
        ),
    )

    name: str = Field(max_length=63, pattern=NAME_PATTERN)
    mount_path: Annotated[
        str,
        Field(max_length=1024, pattern=rf"^/{PRINTABLE}*$"),
        BeforeValidator(no_control_characters),
    ]
    read_only: StrictBool | None = None
    sub_path: (
        Annotated[
            str,
            Field(max_length=1024, pattern=PRINTABLE_PATTERN),
            BeforeValidator(no_control_characters),
        ]
        | None
    ) = None

    @field_validator("mount_path")
    @classmethod
    def _not_reserved(cls, path: str) -> str:
        if any(path == d or path.startswith(d + "/") for d in RESERVED_MOUNT_DIRS):
            raise ValueError(cls.CEL_RULES[0].message)
        return path


class Toleration(ApiModel):
    """A taint the workers tolerate, besides the profile's (Kubernetes' Toleration)."""

    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = None


class PodAffinityTerms(ApiModel):
    """Kubernetes' PodAffinity or PodAntiAffinity; the terms are passed as written."""

    required_during_scheduling_ignored_during_execution: list[KubernetesObject] | None = Field(
        None, max_length=32
    )
    preferred_during_scheduling_ignored_during_execution: list[KubernetesObject] | None = Field(
        None, max_length=32
    )


class Affinity(ApiModel):
    """Kubernetes' Affinity; pod affinity terms join the profile's (gang colocation)."""

    node_affinity: KubernetesObject | None = Field(None, description="Kubernetes' NodeAffinity")
    pod_affinity: PodAffinityTerms | None = None
    pod_anti_affinity: PodAffinityTerms | None = None


class LocalObjectReference(ApiModel):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)


class WorkerTemplateMetadata(ApiModel):
    """Labels and annotations every worker pod carries."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            f"!has(self.labels) || self.labels.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
            f"labels beginning {RESERVED_LABEL_PREFIX} are Carina's",
            "labels",
        ),
    )

    labels: dict[str, LabelValue] | None = Field(None, max_length=64)
    annotations: dict[str, Annotated[str, Field(max_length=16384)]] | None = Field(
        None, max_length=64
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _kubernetes_labels(cls, labels: Any) -> Any:
        return check_labels(labels)

    @field_validator("annotations", mode="before")
    @classmethod
    def _kubernetes_annotations(cls, annotations: Any) -> Any:
        return check_annotations(annotations)

    @field_validator("labels")
    @classmethod
    def _labels_not_reserved(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        if any(k.startswith(RESERVED_LABEL_PREFIX) for k in labels or {}):
            raise ValueError(cls.CEL_RULES[0].message)
        return labels


class WorkerTemplateSpec(ApiModel):
    """The pod and worker-container fields a user sets, in Kubernetes' names and shapes."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.volumeMounts) || self.volumeMounts.all(m, "
            "has(self.volumes) && self.volumes.exists(v, v.name == m.name))",
            "every volumeMount must name a volume of the template",
            "volumeMounts",
        ),
    )

    env: list[EnvVar] | None = Field(None, max_length=128, json_schema_extra=_list_map("name"))
    env_from: list[EnvFromSource] | None = Field(None, max_length=16)
    volumes: list[Volume] | None = Field(None, max_length=32, json_schema_extra=_list_map("name"))
    volume_mounts: list[VolumeMount] | None = Field(
        None, max_length=32, json_schema_extra=_list_map("mountPath")
    )
    node_selector: dict[str, LabelValue] | None = Field(None, max_length=32)
    tolerations: list[Toleration] | None = Field(None, max_length=32)
    affinity: Affinity | None = None
    service_account_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = Field(None, max_length=16)
    priority_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)

    @field_validator("node_selector", mode="before")
    @classmethod
    def _node_labels(cls, selector: Any) -> Any:
        return check_labels(selector)

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar] | None) -> list[EnvVar] | None:
        _unique(env, "name", "env name")
        return env

    @field_validator("volumes")
    @classmethod
    def _unique_volumes(cls, volumes: list[Volume] | None) -> list[Volume] | None:
        _unique(volumes, "name", "volume name")
        return volumes

    @field_validator("volume_mounts")
    @classmethod
    def _mounts_name_volumes(
        cls, mounts: list[VolumeMount] | None, info: ValidationInfo
    ) -> list[VolumeMount] | None:
        _unique(mounts, "mount_path", "mountPath")
        names = {v.name for v in info.data.get("volumes") or ()}
        if any(m.name not in names for m in mounts or ()):
            raise ValueError(cls.CEL_RULES[0].message)
        return mounts


class WorkerTemplate(ApiModel):
    """What a user adds to every worker pod, in the shape of Kubernetes' PodTemplateSpec."""

    # The rest of the pod is the worker contract's and the cluster profile's (render.py);
    # planning/template.py merges the two.

    metadata: WorkerTemplateMetadata | None = None
    spec: WorkerTemplateSpec | None = None


# A node label key: an optional DNS-subdomain prefix and a slash, then a name.
LABEL_KEY_PATTERN = rf"^({DNS_SUBDOMAIN}/)?{NAME_PART}$"


class TopologyMode(StrEnum):
    """Whether the gang must share a topology domain or only prefers to."""

    REQUIRED = "Required"  # the gang waits until one domain has room for all of it
    PREFERRED = "Preferred"  # one domain when one has room, else wherever the gang fits


class TopologySpec(ApiModel):
    """The fabric a gang must stay inside: a node label whose value names a domain."""

    level: str = Field(
        max_length=317,
        pattern=LABEL_KEY_PATTERN,
        description="a node label key of one of the operator's topology levels, e.g."
        " carina.dev/scalable-unit; every worker lands on nodes sharing its value",
    )
    mode: TopologyMode = Field(
        TopologyMode.REQUIRED,
        description="Required: wait until one domain has room for the whole gang;"
        " Preferred: one domain when one has room, else start wherever the gang fits",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _label_key(cls, level: Any) -> Any:
        problem = qualified_name_problem(level) if isinstance(level, str) else None
        if problem:
            raise ValueError(f"must be a node label key: {problem} (got {level!r})")
        return level


class TrainingJobSpec(ApiModel):
    """What a user asks for."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.cluster == 'none' || (has(self.resources) && self.resources.gpus > 0)",
            "resources.gpus must be at least 1 on the vela and blue-vela profiles",
            "resources.gpus",
        ),
        # Transition rules: what cannot change on a created job (spec_changes.py).
        *(rule.cel() for rule in SPEC_CHANGE_RULES),
    )

    workload: Workload
    replicas: StrictInt = Field(1, ge=1, le=4096, description="worker count")
    resources: Resources = Field(default_factory=Resources)
    image: str | None = Field(
        None,
        max_length=512,
        pattern=PRINTABLE_PATTERN,
        description="defaults to the operator's",
    )
    cluster: ClusterProfile = ClusterProfile.NONE
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    suspend: StrictBool = False
    ttl_seconds_after_finished: StrictInt | None = Field(None, ge=0)
    active_deadline_seconds: StrictInt | None = Field(None, ge=1)
    queue: str | None = Field(
        None,
        max_length=63,
        pattern=NAME_PATTERN,
        description="the LocalQueue (in the job's namespace) whose quota the job waits for",
    )
    priority: StrictInt = Field(
        0, ge=-1000, le=1000, description="used when no priorityClassName is set"
    )
    priority_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="a TrainingPriorityClass; its value orders the queue and decides preemption",
    )
    preemption: PreemptionSpec = Field(default_factory=PreemptionSpec)
    preflight: PreflightSpec = Field(default_factory=PreflightSpec)
    template: WorkerTemplate | None = Field(
        None, description="labels, environment, volumes and placement added to every worker pod"
    )
    topology: TopologySpec | None = Field(
        None,
        description="keep the gang inside one topology domain (unset: the cluster profile's"
        " default; blue-vela prefers one scalable unit)",
    )
    depends_on: list[JobName] | None = Field(
        None,
        max_length=32,
        description="TrainingJobs of the same namespace that must have Succeeded before this"
        " one starts; the jobs its job:// checkpoint references name are implied",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _gpus_for_profiles(self) -> TrainingJobSpec:
        if self.cluster != ClusterProfile.NONE and self.resources.gpus < 1:
            raise ValueError(self.CEL_RULES[0].message)
        return self

    @field_validator("depends_on")
    @classmethod
    def _unique_upstreams(cls, names: list[str] | None) -> list[str] | None:
        seen: set[str] = set()
        for name in names or ():
            if name in seen:
                raise ValueError(f"duplicate job name {name!r}")
            seen.add(name)
        return names


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


class Condition(ApiModel):
    """A Kubernetes-style condition; reasons come from `carina.platform.api.reasons`."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(None, ge=0)


class WorkerCounts(ApiModel):
    total: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0


class Progress(ApiModel):
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    checkpoint_seconds: float | None = Field(
        None, description="seconds this attempt's workers spent saving checkpoints so far"
    )
    step_seconds: float | None = Field(
        None, description="rank 0's median time per step over its recent steps"
    )
    stage: str | None = Field(
        None, description="the stage being trained, by name (a pretraining run with stages)"
    )
    stage_index: int | None = Field(None, description="the stage's position, 1-based")
    stage_count: int | None = Field(None, description="stages of the whole run")
    updated_at: datetime | None = None
    stepped_at: datetime | None = Field(None, description="when the step was last seen to advance")


class Straggler(ApiModel):
    """A rank whose compute time per step is an outlier, and where it runs."""

    rank: int
    worker: int
    node: str | None = None
    step_seconds: float = Field(description="its recent compute time per step")
    median_seconds: float = Field(description="the median rank's")


class CheckpointStatus(ApiModel):
    step: int
    uri: str
    time: datetime | None = None


class DamagedCheckpoint(ApiModel):
    """A checkpoint a worker's resume found damaged and passed over for an older one."""

    step: int
    uri: str
    file: str = ""
    reason: str = ""


class RestartCounts(ApiModel):
    """Restarts by whose fault they were: the user's code, or the infrastructure."""

    application: int = 0
    infrastructure: int = 0
    preemption: int = 0


class QuotaAdmission(ApiModel):
    """The quota a job holds: in which ClusterQueue, how much, since when."""

    cluster_queue: str
    usage: dict[str, float] = Field(default_factory=dict)
    borrowing: bool = False
    admitted_at: datetime


class RequeueState(ApiModel):
    count: int = 0
    requeue_at: datetime | None = None


class EvictionStatus(ApiModel):
    """An eviction in flight: asked when, the victims' deadline, why, and for whom."""

    reason: str
    detail: str | None = None  # InClusterQueue, InCohortReclamation
    requested_at: datetime
    deadline: datetime
    preemptor: str | None = None  # namespace/name of the job that needs the quota
    message: str = ""


class GoodputStatus(ApiModel):
    """Where the job's GPU time went (GPU-seconds)."""

    allocated: float = 0  # workers held GPUs
    productive: float = 0  # allocated minus the losses below
    lost_to_failures: float = 0  # work since the last checkpoint when a gang restarted
    lost_to_preemption: float = 0  # work since the last checkpoint when a victim was killed
    restart_pauses: float = 0  # GPUs held while the gang was restarting or starting
    checkpoint_saves: float = 0  # GPUs held while every rank was saving a checkpoint
    # The attempt's running save time last booked (Progress.checkpointSeconds).
    saves_booked_seconds: float = 0
    queue_wait_seconds: float = 0  # wall time waiting for quota (no GPUs held)
    updated_at: datetime | None = None  # the moment these figures are exact at


class QueueingStatus(ApiModel):
    """Admission state, written only by the admission writer (two writers never share a list)."""

    local_queue: str | None = None
    cluster_queue: str | None = None
    priority: int = 0
    active: bool = True
    admission: QuotaAdmission | None = None
    eviction: EvictionStatus | None = None
    requeue: RequeueState = Field(default_factory=RequeueState)
    reason: str | None = Field(None, description="why the job waits, or QuotaReserved")
    message: str = ""
    position: int | None = Field(None, description="1 = next in its ClusterQueue")
    estimated_start: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)


class TopologyPlacement(ApiModel):
    """The topology domain the gang's workers were pinned to when they were created."""

    level: str = Field(description="the node label key")
    domain: str = Field(description="its value on the nodes the workers may use")


class JobInput(ApiModel):
    """An upstream TrainingJob: the field that names it and, for a reference, its checkpoint."""

    field: str = Field(description="spec.workload.finetune.base, spec.dependsOn[0] ...")
    job: str = Field(description="the upstream TrainingJob, in the same namespace")
    uri: str | None = Field(
        None, description="the checkpoint a job:// reference resolved to (what the worker reads)"
    )
    step: int | None = Field(None, description="that checkpoint's step")


class TrainingJobStatus(ApiModel):
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
    damaged_checkpoints: list[DamagedCheckpoint] | None = Field(
        None,
        description="damaged checkpoints workers passed over (the newest 16), each announced"
        " once by a CheckpointCorrupt Warning event",
    )
    stragglers: list[Straggler] | None = Field(
        None,
        max_length=16,
        description="ranks of the running gang whose step time is an outlier (the slowest"
        " 16), each announced once by a Straggler Warning event",
    )
    observed_generation: int | None = None
    queueing: QueueingStatus | None = None
    goodput: GoodputStatus | None = None
    placement: TopologyPlacement | None = Field(
        None,
        description="the topology domain of the current workers (spec.topology); a restart"
        " keeps it while it has room",
    )
    inputs: list[JobInput] | None = Field(
        None,
        description="the jobs this one started after (job:// references and spec.dependsOn),"
        " each with the checkpoint a reference resolved to; fixed once recorded",
    )


# ---------------------------------------------------------------- the object


class ObjectMeta(ApiModel):
    """The parts of Kubernetes object metadata Carina reads; the rest passes through."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str = Field(max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)
    namespace: str | None = Field(None, max_length=63, pattern=NAME_PATTERN)
    labels: dict[str, LabelValue] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    resource_version: str | None = None

    @field_validator("labels", mode="before")
    @classmethod
    def _kubernetes_labels(cls, labels: Any) -> Any:
        return check_labels(labels)

    @field_validator("annotations", mode="before")
    @classmethod
    def _kubernetes_annotations(cls, annotations: Any) -> Any:
        return check_annotations(annotations)


def _checkpoint_inputs() -> tuple[tuple[str, str], ...]:
    """(workload kind, field) of every field a `job://` reference may fill (wire names)."""
    found = []
    for kind in WORKLOAD_KINDS:
        annotation = Workload.model_fields[kind].annotation
        for member in get_args(annotation):
            if isinstance(member, type) and issubclass(member, ApiModel):
                found += [(kind, name) for name in job_reference_fields(member)]
    return tuple(found)


# Where a workload takes a checkpoint that may be another job's: (kind, field), wire names.
CHECKPOINT_INPUTS = _checkpoint_inputs()


def _no_self_reference_rules() -> tuple[CelRule, ...]:
    """The API server's half of "a job cannot wait for itself" (it sees only this object)."""
    rules = [
        CelRule(
            "!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)",
            "a job cannot depend on itself",
            "spec.dependsOn",
        )
    ]
    for kind, name in CHECKPOINT_INPUTS:
        at = f"self.spec.workload.{kind}"
        rules.append(
            CelRule(
                f"!has({at}) || !has({at}.{name})"
                f" || {at}.{name} != '{JOB_REFERENCE_PREFIX}' + self.metadata.name",
                "a job cannot start from its own checkpoint",
                f"spec.workload.{kind}.{name}",
            )
        )
    return tuple(rules)


class TrainingJob(ApiModel):
    """A TrainingJob manifest as a user writes it (status optional)."""

    # Rules across metadata and spec: a job that names itself, as an upstream or as the job
    # whose checkpoint it starts from, would wait forever. Cycles through other jobs only the
    # platform can see (`planning.dependencies`).
    CEL_RULES: ClassVar[tuple[CelRule, ...]] = _no_self_reference_rules()

    api_version: Literal["carina.dev/v1alpha1"] = "carina.dev/v1alpha1"
    kind: Literal["TrainingJob"] = "TrainingJob"
    metadata: ObjectMeta
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _not_its_own_upstream(cls, data: Any, handler: Callable[[Any], TrainingJob]) -> TrainingJob:
        job = handler(data)
        name = job.metadata.name
        config = job.spec.workload.config.to_wire()
        wrong: list[tuple[tuple[str, ...], str, str]] = [
            (("spec", "dependsOn"), name, cls.CEL_RULES[0].message)
            for upstream in job.spec.depends_on or ()
            if upstream == name
        ]
        for rule, (kind, field) in zip(cls.CEL_RULES[1:], CHECKPOINT_INPUTS, strict=True):
            if kind == job.spec.workload.kind and config.get(field) == JOB_REFERENCE_PREFIX + name:
                wrong.append((("spec", "workload", kind, field), config[field], rule.message))
        if wrong:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("self_reference", message),
                        loc=loc,
                        input=value,
                    )
                    for loc, value, message in wrong
                ],
            )
        return job

    @classmethod
    def parse(cls, manifest: dict[str, Any]) -> TrainingJob:
        """Validate a manifest (dict) into a TrainingJob; raises pydantic.ValidationError."""
        return cls.model_validate(manifest)
