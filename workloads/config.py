"""Typed workload configs: what a TrainingJob asks its workers to do.

This module is shared by every component: the API types embed these models, the CRD is
generated from them, and the worker reads them back from `CARINA_SPEC`. It imports nothing
heavy (no torch) and nothing else from carina, so the operator and the control plane can
use it without the training stack.

Field names are camelCase on the wire (Kubernetes style) and snake_case in Python.
Cross-field rules are declared once per model in `CEL_RULES` (enforced by the API server)
and mirrored by a pydantic validator (enforced locally by `carina validate`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)
from pydantic.alias_generators import to_camel

# The contract's exit codes, re-exported: the API's failure policy defaults to them.
from carina.workloads.contract import PERMANENT_EXIT_CODES as PERMANENT_EXIT_CODES
from carina.workloads.contract import ExitCode as ExitCode

SCHEMA_VERSION = 1


# Validation errors as a person reads them, the one formatter every component uses (`carina
# validate`, the REST API, the operator, a worker reading its spec): a field path as the API
# server writes it (`spec.template.spec.env[0].name`) and the rule in words.
_RULE_WORDS = {"extra_forbidden": "unknown field", "missing": "required field is missing"}


def error_path(loc: Sequence[int | str]) -> str:
    """`spec.template.spec.env[0].name` from a pydantic error location."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(root)"


def error_rule(error: Mapping[str, Any]) -> str:
    """The broken rule of one pydantic error, in the words the API uses."""
    rule = _RULE_WORDS.get(str(error.get("type", "")), str(error.get("msg", "invalid")))
    return rule.removeprefix("Value error, ")


def describe_errors(
    errors: Iterable[Mapping[str, Any]], prefix: Sequence[int | str] = ()
) -> list[tuple[str, str]]:
    """(field path, rule) for each pydantic error, the path under `prefix`."""
    return [(error_path((*prefix, *e.get("loc", ()))), error_rule(e)) for e in errors]


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule: its CEL form for the API server and the message both sides show."""

    rule: str
    message: str
    field_path: str | None = None


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases, unknown fields refused.

    Numbers and switches are declared StrictInt, StrictFloat (which takes an integer) and
    StrictBool: `true` is not 1 and "2" is not 2, as the API server's schema says.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = ()

    def to_wire(self) -> dict:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# A URI or path holds no control character (C0, DEL, C1): a NUL cuts it short in C code, a
# newline forges log lines. In a pattern, so the CRD and the OpenAPI document state it too.
PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]"
PRINTABLE_PATTERN = rf"^{PRINTABLE}*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def no_control_characters(value: object) -> object:
    """Refuse a string with a control character, naming it (before the pattern's own error)."""
    if isinstance(value, str):
        found = _CONTROL.search(value)
        if found is not None:
            raise ValueError(
                f"must not contain control characters (found {found.group()!r}"
                f" at position {found.start()})"
            )
    return value


_URI_FORMS = (
    rf"s3://[a-z0-9][a-z0-9.\-]{{1,61}}[a-z0-9](/{PRINTABLE}*)?|file:///{PRINTABLE}*"
    rf"|pvc://[a-z0-9][a-z0-9\-]*(/{PRINTABLE}*)?|/{PRINTABLE}*"
)
CHECKPOINT_URI_PATTERN = rf"^({_URI_FORMS})$"
CheckpointUri = Annotated[
    str,
    Field(
        pattern=CHECKPOINT_URI_PATTERN,
        max_length=1024,
        description="s3://bucket/prefix, file:///path, pvc://claim/path or an absolute path",
    ),
    BeforeValidator(no_control_characters),
]

# A checkpoint a workload starts from may name a TrainingJob of the same namespace instead:
# `job://<name>` stands for that job's final checkpoint (its status.lastCheckpoint once it has
# Succeeded). The platform resolves it before any worker starts, so a worker only ever reads a
# URI. A bare name (a TrainingJob's, at most 50 characters): no namespace, no path.
JOB_REFERENCE_PREFIX = "job://"
JOB_REFERENCE_PATTERN = r"job://[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?"
CHECKPOINT_INPUT_PATTERN = rf"^({JOB_REFERENCE_PATTERN}|{_URI_FORMS})$"


@dataclass(frozen=True)
class TakesJobReference:
    """Marks a field of type `CheckpointInput`: the platform finds job references by it."""


def _job_reference_form(value: object) -> object:
    """Refuse a malformed `job://` reference in words (before the pattern's own error)."""
    if (
        isinstance(value, str)
        and value.startswith(JOB_REFERENCE_PREFIX)
        and not re.fullmatch(JOB_REFERENCE_PATTERN, value)
    ):
        raise ValueError(
            "job://<name> names a TrainingJob of the same namespace by its name alone"
            " (lowercase letters, digits and '-', at most 50 characters; no namespace, no path),"
            f" got {value[:80]!r}"
        )
    return value


CheckpointInput = Annotated[
    str,
    Field(
        pattern=CHECKPOINT_INPUT_PATTERN,
        max_length=1024,
        description="s3://bucket/prefix, file:///path, pvc://claim/path, an absolute path, or"
        " job://<name>: the final checkpoint of that TrainingJob of the same namespace (the job"
        " waits until it has Succeeded)",
    ),
    BeforeValidator(_job_reference_form),
    BeforeValidator(no_control_characters),
    TakesJobReference(),
]


def is_job_reference(value: str) -> bool:
    """Whether a checkpoint input names a TrainingJob (`job://<name>`) rather than a URI."""
    return value.startswith(JOB_REFERENCE_PREFIX)


def job_reference_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The wire names of `model`'s fields that take a job reference (`CheckpointInput`)."""

    def marked(annotation: Any) -> bool:
        if get_origin(annotation) is Annotated:
            return any(isinstance(m, TakesJobReference) for m in get_args(annotation)[1:])
        return any(marked(a) for a in get_args(annotation))

    return tuple(
        field.alias or name
        for name, field in model.model_fields.items()
        if any(isinstance(m, TakesJobReference) for m in field.metadata) or marked(field.annotation)
    )


HttpUrlText = Annotated[
    str,
    Field(max_length=2048, pattern=rf"^https?://{PRINTABLE}*$"),
    BeforeValidator(no_control_characters),
]
# A local file, glob or other path-like text (data paths, tokenizer files, mount paths).
PathText = Annotated[
    str,
    Field(max_length=4096, pattern=PRINTABLE_PATTERN),
    BeforeValidator(no_control_characters),
]


# ---------------------------------------------------------------- model architecture


class ModelPreset(StrEnum):
    """Named model sizes, from seconds-per-step on a laptop CPU to a 1B-parameter run."""

    TINY = "tiny"
    SMALL = "small"
    M350 = "350m"
    B1 = "1b"


@dataclass(frozen=True)
class Architecture:
    """A fully resolved decoder architecture (what the model code builds)."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    max_seq_len: int
    rope_theta: float
    cla_sharing: int
    moe_experts: int
    moe_every: int
    moe_mi_alpha: float
    mup: bool
    mup_base_width: int
    tie_embeddings: bool
    # Defaults here too, so manifests written before these fields existed still load.
    mup_emb_mult: float = 12.0
    mup_res_mult: float = 0.22
    mup_init_std: float = 0.1
    # Bits of every block linear's fake-quantized input (pretrained with `qat`); 16 = off.
    activation_bits: int = 16

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_layers(self) -> int:
        """Layers that compute their own K/V under cross-layer attention (CLA)."""
        return -(-self.n_layers // self.cla_sharing)

    def kv_cache_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        """KV-cache size per token: 2 (K and V) * n_kv_heads * d_head * KV layers * bytes."""
        return 2 * self.n_kv_heads * self.d_head * self.kv_layers * bytes_per_element


# vocab 260 = 256 bytes + BOS, EOS, PAD, SEP of the byte tokenizer.
BYTE_VOCAB = 260

PRESETS: dict[str, dict[str, int | float | bool]] = {
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "max_seq_len": 256},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "max_seq_len": 512},
    "350m": {"d_model": 1024, "n_layers": 24, "n_heads": 16, "n_kv_heads": 16, "max_seq_len": 2048},
    "1b": {"d_model": 2048, "n_layers": 24, "n_heads": 16, "n_kv_heads": 8, "max_seq_len": 4096},
}


class MoeSpec(ApiModel):
    """Dense-trained mixture of experts (DS-MoE): every expert runs in training."""

    experts: StrictInt = Field(4, ge=2, le=64, description="experts per MoE layer")
    every: StrictInt = Field(1, ge=1, description="every k-th MLP is a mixture (1 = all)")
    mi_alpha: StrictFloat = Field(
        4e-4, ge=0.0, le=1.0, description="weight of the mutual-information loss"
    )


class ModelSpec(ApiModel):
    """A preset and the overrides a user applies on top of it."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.dModel) || !has(self.nHeads) || self.dModel % self.nHeads == 0",
            "dModel must be divisible by nHeads",
        ),
        CelRule(
            "!has(self.nHeads) || !has(self.nKvHeads) || self.nHeads % self.nKvHeads == 0",
            "nHeads must be divisible by nKvHeads",
        ),
    )

    preset: ModelPreset = Field(ModelPreset.TINY, description="named model size")
    vocab_size: StrictInt | None = Field(None, ge=2, le=1_048_576)
    d_model: StrictInt | None = Field(None, ge=8, le=65536)
    n_layers: StrictInt | None = Field(None, ge=1, le=512)
    n_heads: StrictInt | None = Field(None, ge=1, le=512)
    n_kv_heads: StrictInt | None = Field(
        None, ge=1, le=512, description="K/V heads: equal to nHeads is MHA, 1 is MQA"
    )
    ffn_hidden: StrictInt | None = Field(None, ge=8)
    max_seq_len: StrictInt | None = Field(None, ge=8, le=1_048_576)
    rope_theta: StrictFloat = Field(10000.0, gt=0, description="RoPE base frequency")
    cla_sharing: StrictInt = Field(
        1, ge=1, le=16, description="cross-layer attention: layers sharing one K/V (1 = off)"
    )
    moe: MoeSpec | None = Field(None, description="dense-trained mixture of experts")
    mup: StrictBool = Field(True, description="maximal update parametrization")
    mup_base_width: StrictInt = Field(256, ge=8, description="µP base width d_base")
    # µP multipliers of the Power-scheduler paper's setup (Shen et al. 2024, Table 1; the same
    # as CerebrasGPT). Its 36M search used mupResMult 0.26 and its 1B MoE 0.28.
    mup_emb_mult: StrictFloat = Field(
        12.0, gt=0.0, le=1000.0, description="µP: embedding output multiplier m_emb"
    )
    mup_res_mult: StrictFloat = Field(
        0.22, gt=0.0, le=100.0, description="µP: attention and MLP output multiplier m_res"
    )
    mup_init_std: StrictFloat = Field(
        0.1, gt=0.0, le=10.0, description="µP: base init std σ (hidden matrices σ/√m_width)"
    )
    tie_embeddings: StrictBool = False

    @model_validator(mode="after")
    def _divisibility(self) -> ModelSpec:
        arch = self.resolve()
        if arch.d_model % arch.n_heads:
            raise ValueError("dModel must be divisible by nHeads")
        if arch.n_heads % arch.n_kv_heads:
            raise ValueError("nHeads must be divisible by nKvHeads")
        return self

    def resolve(self, vocab_size: int = BYTE_VOCAB) -> Architecture:
        """The preset with this spec's overrides applied."""
        base = dict(PRESETS[ModelPreset(self.preset).value])
        for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "max_seq_len"):
            value = getattr(self, key)
            if value is not None:
                base[key] = value
        d_model = int(base["d_model"])
        # SwiGLU hidden width: 8/3 * d rounded up to a multiple of 32 (keeps matmuls aligned).
        ffn = self.ffn_hidden or 32 * -(-(8 * d_model // 3) // 32)
        moe = self.moe
        return Architecture(
            vocab_size=self.vocab_size or vocab_size,
            d_model=d_model,
            n_layers=int(base["n_layers"]),
            n_heads=int(base["n_heads"]),
            n_kv_heads=int(base["n_kv_heads"]),
            ffn_hidden=ffn,
            max_seq_len=int(base["max_seq_len"]),
            rope_theta=self.rope_theta,
            cla_sharing=self.cla_sharing,
            moe_experts=moe.experts if moe else 0,
            moe_every=moe.every if moe else 1,
            moe_mi_alpha=moe.mi_alpha if moe else 0.0,
            mup=self.mup,
            mup_base_width=self.mup_base_width,
            tie_embeddings=self.tie_embeddings,
            mup_emb_mult=self.mup_emb_mult,
            mup_res_mult=self.mup_res_mult,
            mup_init_std=self.mup_init_std,
        )


# ---------------------------------------------------------------- data, optimizer, schedule


class DataSource(StrEnum):
    PYTHON_STDLIB = "python-stdlib"  # the standard library's own source: on every machine
    FILES = "files"  # local files or globs
    SYNTHETIC = "synthetic"  # generated on the fly (tests, benchmarks)


class DataSpec(ApiModel):
    """Where the training text comes from and how it is tokenized."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.source != 'files' || (has(self.paths) && size(self.paths) > 0)",
            "paths must list at least one file or glob when source is files",
        ),
    )

    source: DataSource = DataSource.PYTHON_STDLIB
    paths: list[PathText] | None = Field(
        None, max_length=256, description="files or globs (source: files)"
    )
    tokenizer: PathText = Field(
        "bytes", description="'bytes' or the path of a tokenizers JSON file"
    )
    val_fraction: StrictFloat = Field(
        0.02, ge=0.0, lt=0.5, description="held-out share of documents"
    )
    max_bytes: StrictInt | None = Field(
        None, ge=1024, description="cap on the corpus size read (bytes)"
    )

    @model_validator(mode="after")
    def _paths_for_files(self) -> DataSpec:
        if self.source == DataSource.FILES and not self.paths:
            raise ValueError("paths must list at least one file or glob when source is files")
        return self


class OptimizerSpec(ApiModel):
    """AdamW; under µP the hidden matrices' learning rate is divided by the width multiplier."""

    lr: StrictFloat = Field(3e-3, gt=0, le=10.0, description="peak learning rate")
    betas: tuple[StrictFloat, StrictFloat] = (0.9, 0.95)
    eps: StrictFloat = Field(1e-8, gt=0)
    weight_decay: StrictFloat = Field(0.1, ge=0.0, le=1.0)
    grad_clip: StrictFloat = Field(1.0, ge=0.0, description="global gradient-norm clip (0 = off)")


class ScheduleKind(StrEnum):
    CONSTANT = "constant"
    COSINE = "cosine"
    WSD = "wsd"
    POWER = "power"


class DecayShape(StrEnum):
    """Shape of the final decay of `wsd` and `power`."""

    EXPONENTIAL = "exponential"  # the Power-scheduler paper's (Shen et al. 2024, §5.1)
    LINEAR = "linear"
    COSINE = "cosine"


class ScheduleSpec(ApiModel):
    """Learning-rate schedule. `power` follows the Power scheduler: lr = min(lrMax, β·a·n^b)."""

    kind: ScheduleKind = ScheduleKind.WSD
    warmup_steps: StrictInt = Field(10, ge=0)
    decay_fraction: StrictFloat = Field(
        0.1, ge=0.0, le=1.0, description="share of steps in the final decay (wsd, power)"
    )
    decay_shape: DecayShape = Field(
        DecayShape.EXPONENTIAL, description="final decay of wsd and power to the floor"
    )
    decay_tau: StrictFloat = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="exponential decay's time constant as a share of the decay phase",
    )
    min_lr_ratio: StrictFloat = Field(0.0, ge=0.0, le=1.0, description="floor as a share of peak")
    power_a: StrictFloat = Field(4.0, gt=0, description="power scheduler amplitude a")
    power_b: StrictFloat = Field(-0.51, lt=0, description="power scheduler exponent b")
    power_lr_max: StrictFloat = Field(0.02, gt=0, description="power scheduler cap η_max")
    token_offset: StrictInt | None = Field(
        None,
        ge=0,
        description="tokens trained before step 0 (power's clock); unset: the init "
        "checkpoint's tokensSeen, else 0",
    )


class Precision(StrEnum):
    AUTO = "auto"  # bf16 autocast on GPU, fp32 on CPU
    FP32 = "fp32"
    BF16 = "bf16"


class Parallelism(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"


# ---------------------------------------------------------------- workloads

# Weight of the kurtosis term, L = CE + λ·Kurt (Kurt: mean over layers and tokens, ≈ 3 for
# Gaussian outputs). The paper's public demo uses 1e-5, which moves a tiny model's kurtosis
# by nothing measurable; docs/quantization.md gives the measurement behind this default.
KURTOSIS_LAMBDA = 1e-2


class PretrainQatSpec(ApiModel):
    """W4A4 quantization-aware pretraining (Nrusimha et al. 2024, arXiv 2404.03605).

    From step 0, every block linear's input is fake-quantized with learned clip values
    (calibrated on training batches first), and λ·kurtosis of those layers' outputs joins
    the loss; weights stay in floating point until a `quantize` job (method ptq) quantizes them.
    """

    activation_bits: StrictInt = Field(4, ge=2, le=8)
    kurtosis_lambda: StrictFloat = Field(
        KURTOSIS_LAMBDA, ge=0.0, le=10.0, description="weight of the output-kurtosis term"
    )
    clip_lr: StrictFloat = Field(
        1e-2, gt=0, le=10.0, description="learning rate of the clip values at the schedule's peak"
    )
    calibration_batches: StrictInt = Field(
        4, ge=1, le=1024, description="training batches the initial clip values come from"
    )


class PretrainConfig(ApiModel):
    """Pretrain a decoder LM from scratch (or continue from `init`)."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.batchSize % self.microBatchSize == 0",
            "batchSize must be a multiple of microBatchSize",
        ),
        CelRule(
            "!has(self.schedule) || !has(self.schedule.warmupSteps) "
            "|| self.schedule.warmupSteps < self.steps",
            "schedule.warmupSteps must be smaller than steps",
        ),
    )

    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    steps: StrictInt = Field(100, ge=1, le=100_000_000, description="optimizer steps")
    batch_size: StrictInt = Field(8, ge=1, description="sequences per optimizer step, all workers")
    micro_batch_size: StrictInt = Field(
        8, ge=1, description="sequences per forward pass, all workers (gradient accumulation)"
    )
    seq_len: StrictInt = Field(128, ge=8, le=1_048_576, description="tokens per sequence")
    eval_every: StrictInt = Field(50, ge=0, description="held-out loss every N steps (0 = off)")
    eval_batches: StrictInt = Field(4, ge=1)
    log_every: StrictInt = Field(1, ge=1)
    seed: StrictInt = Field(1234, ge=0)
    precision: Precision = Precision.AUTO
    parallelism: Parallelism = Parallelism.DDP
    init: CheckpointInput | None = Field(None, description="start from this checkpoint's weights")
    compile: StrictBool = Field(False, description="torch.compile the model (worth it on GPUs)")
    qat: PretrainQatSpec | None = Field(
        None, description="W4A4 fake quantization and kurtosis regularization from step 0"
    )

    @model_validator(mode="after")
    def _batch(self) -> PretrainConfig:
        if self.batch_size % self.micro_batch_size:
            raise ValueError("batchSize must be a multiple of microBatchSize")
        if self.schedule.warmup_steps >= self.steps:
            raise ValueError("schedule.warmupSteps must be smaller than steps")
        return self


class FinetuneMode(StrEnum):
    SFT = "sft"
    SSR = "ssr"  # Selective Self-Rehearsal


class JudgeKind(StrEnum):
    EXACT = "exact"
    RULE = "rule"
    EMBEDDING = "embedding"
    HTTP = "http"


class JudgeSpec(ApiModel):
    """Decides whether the base model's own answer is acceptable given the gold answer."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.kind != 'http' || has(self.url)", "url is required when kind is http"),
    )

    kind: JudgeKind = JudgeKind.RULE
    threshold: StrictFloat = Field(0.8, ge=0.0, le=1.0, description="similarity needed (embedding)")
    url: HttpUrlText | None = Field(None, description="OpenAI-compatible endpoint")
    model: str | None = Field(None, max_length=256, description="model name sent to the endpoint")
    timeout_seconds: StrictFloat = Field(30.0, gt=0, le=600)
    retries: StrictInt = Field(2, ge=0, le=10)
    prompt_template: str | None = Field(
        None,
        max_length=16384,
        description="http: user message with {question}, {gold} and {candidate} placeholders",
    )
    # Only variables named for the purpose: a job may not send the worker's other environment
    # (storage keys, the platform's own settings) to an endpoint it chooses.
    api_key_env: str | None = Field(
        None,
        pattern=r"^CARINA_JUDGE_[A-Z0-9_]+$",
        max_length=256,
        description="http: environment variable holding the endpoint's bearer token; its name "
        "starts with CARINA_JUDGE_ (e.g. CARINA_JUDGE_TOKEN)",
    )

    @model_validator(mode="after")
    def _url_for_http(self) -> JudgeSpec:
        if self.kind == JudgeKind.HTTP and not self.url:
            raise ValueError("url is required when kind is http")
        return self


class TaskDataSpec(ApiModel):
    """A task's data: generated (no download) or a JSONL file in its usual layout."""

    generator: Literal["grounded-qa", "code-choice", "python-stdlib"] | None = Field(
        None, description="python-stdlib: the held-out documents of the pretraining corpus"
    )
    path: PathText | None = Field(None, description="JSONL file")
    format: Literal["squad2", "mmlu", "hellaswag", "text", "carina-qa"] | None = None
    examples: StrictInt = Field(512, ge=1, le=10_000_000)
    seed: StrictInt = Field(0, ge=0)


class FinetuneConfig(ApiModel):
    """Supervised fine-tuning of a base checkpoint: plain SFT or Selective Self-Rehearsal."""

    base: CheckpointInput = Field(description="checkpoint to start from")
    mode: FinetuneMode = FinetuneMode.SSR
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    data: TaskDataSpec = Field(default_factory=lambda: TaskDataSpec(generator="grounded-qa"))
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(lr=1e-3))
    schedule: ScheduleSpec = Field(
        default_factory=lambda: ScheduleSpec(kind=ScheduleKind.COSINE, warmup_steps=5)
    )
    steps: StrictInt = Field(100, ge=1)
    batch_size: StrictInt = Field(8, ge=1)
    micro_batch_size: StrictInt = Field(8, ge=1)
    max_new_tokens: StrictInt = Field(48, ge=1, le=4096, description="generation budget (SSR)")
    seed: StrictInt = Field(1234, ge=0)
    precision: Precision = Precision.AUTO


class QuantizeMethod(StrEnum):
    PTQ = "ptq"  # weights only, no training
    QAT = "qat"  # fake-quantized activations during fine-tuning, then weight PTQ
    QAT_KURTOSIS = "qat-kurtosis"  # QAT plus kurtosis regularization of layer outputs


class QuantizeConfig(ApiModel):
    """W4A4: quantization-aware training with activation regularization, then weight PTQ."""

    base: CheckpointInput = Field(description="checkpoint to quantize")
    method: QuantizeMethod = QuantizeMethod.QAT_KURTOSIS
    weight_bits: StrictInt = Field(4, ge=2, le=8)
    activation_bits: StrictInt = Field(4, ge=2, le=16)
    group_size: StrictInt = Field(
        128, ge=0, description="weight quantization group (0 = per channel)"
    )
    weight_ptq: Literal["rtn", "gptq"] = "gptq"
    kurtosis_lambda: StrictFloat = Field(KURTOSIS_LAMBDA, ge=0.0, le=10.0)
    steps: StrictInt = Field(100, ge=0)
    calibration_batches: StrictInt = Field(8, ge=1)
    data: DataSpec = Field(default_factory=DataSpec)
    optimizer: OptimizerSpec = Field(default_factory=lambda: OptimizerSpec(lr=1e-4))
    batch_size: StrictInt = Field(8, ge=1)
    seq_len: StrictInt = Field(128, ge=8)
    seed: StrictInt = Field(1234, ge=0)
    schedule: ScheduleSpec = Field(
        default_factory=lambda: ScheduleSpec(kind=ScheduleKind.COSINE, warmup_steps=5),
        description="learning-rate schedule of QAT fine-tuning",
    )
    clip_lr: StrictFloat = Field(
        1e-2, gt=0, le=10.0, description="learning rate of the learned activation clip values"
    )
    eval_batches: StrictInt = Field(
        8, ge=1, description="held-out batches (of batchSize) behind each perplexity"
    )


class EvalTask(ApiModel):
    """One task of an evaluation suite."""

    name: str = Field(max_length=128, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    kind: Literal["perplexity", "multiple-choice", "refusal"]
    data: TaskDataSpec
    target: StrictBool = Field(
        False, description="the fine-tuning task itself: reported, left out of the average drop"
    )


class EvaluateConfig(ApiModel):
    """Evaluate a checkpoint on a suite, optionally against a baseline checkpoint."""

    base: CheckpointInput = Field(description="checkpoint to evaluate")
    compare_to: CheckpointInput | None = Field(None, description="baseline checkpoint")
    tasks: list[EvalTask] = Field(min_length=1, max_length=64)
    batch_size: StrictInt = Field(16, ge=1)
    max_new_tokens: StrictInt = Field(32, ge=1, le=4096, description="generation budget (refusal)")


# ---------------------------------------------------------------- vision: DeiT-LT


class VisionPreset(StrEnum):
    """Named sizes of the ViT student and its CNN teacher."""

    TINY = "tiny"  # 8x8 digits on a laptop CPU
    SMALL = "small"  # 32x32 images on a GPU: a DeiT-S student, a ResNet-32 teacher


@dataclass(frozen=True)
class VisionArchitecture:
    """A fully resolved student (DeiT) and teacher (ResNet) pair (what the model code builds)."""

    image_size: int
    in_channels: int
    num_classes: int
    patch_size: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_ratio: int
    dist_token: bool  # False: a plain ViT with a class token only
    teacher_widths: tuple[int, ...]  # channels of the ResNet's stages
    teacher_blocks: int  # residual blocks per stage

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


VISION_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "image_size": 8,
        "patch_size": 2,
        "d_model": 64,
        "n_layers": 4,
        "n_heads": 4,
        "mlp_ratio": 2,
        "teacher_widths": (16, 32, 64),
        "teacher_blocks": 1,
    },
    "small": {
        "image_size": 32,
        "patch_size": 4,
        "d_model": 384,
        "n_layers": 12,
        "n_heads": 6,
        "mlp_ratio": 4,
        "teacher_widths": (16, 32, 64),
        "teacher_blocks": 5,
    },
}


class VisionModelSpec(ApiModel):
    """A preset and the student's overrides (224-pixel inputs: imageSize 224, patchSize 16)."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.dModel) || !has(self.nHeads) || self.dModel % self.nHeads == 0",
            "dModel must be divisible by nHeads",
        ),
        CelRule(
            "!has(self.imageSize) || !has(self.patchSize) || self.imageSize % self.patchSize == 0",
            "imageSize must be divisible by patchSize",
        ),
    )

    preset: VisionPreset = Field(VisionPreset.TINY, description="named student and teacher size")
    image_size: StrictInt | None = Field(
        None, ge=4, le=1024, description="input side in pixels (images are resized to it)"
    )
    patch_size: StrictInt | None = Field(None, ge=1, le=64)
    d_model: StrictInt | None = Field(None, ge=8, le=8192)
    n_layers: StrictInt | None = Field(None, ge=1, le=64)
    n_heads: StrictInt | None = Field(None, ge=1, le=128)

    @model_validator(mode="after")
    def _divisibility(self) -> VisionModelSpec:
        arch = self.resolve(in_channels=1, num_classes=2, dist_token=True)
        if arch.d_model % arch.n_heads:
            raise ValueError("dModel must be divisible by nHeads")
        if arch.image_size % arch.patch_size:
            raise ValueError("imageSize must be divisible by patchSize")
        return self

    def resolve(self, in_channels: int, num_classes: int, dist_token: bool) -> VisionArchitecture:
        """The preset with this spec's overrides, for data of that many channels and classes."""
        base = dict(VISION_PRESETS[VisionPreset(self.preset).value])
        for key in ("image_size", "patch_size", "d_model", "n_layers", "n_heads"):
            value = getattr(self, key)
            if value is not None:
                base[key] = value
        return VisionArchitecture(
            in_channels=in_channels, num_classes=num_classes, dist_token=dist_token, **base
        )


class VisionDataSource(StrEnum):
    DIGITS = "digits"  # scikit-learn's bundled 8x8 digits (no download)
    IMAGE_FOLDER = "image-folder"  # <path>/<class name>/*.pgm|ppm|pnm


class VisionDataSpec(ApiModel):
    """Images, a balanced held-out set, and a long-tailed training set cut from the rest.

    Class c (in order: digits 0-9, or the folders sorted by name) keeps
    n_c = round(maxPerClass · imbalanceRatio^(-c/(C-1))) training images, so class 0 is the
    head and the last class holds maxPerClass / imbalanceRatio.
    """

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.source != 'image-folder' || has(self.path)",
            "path is required when source is image-folder",
        ),
    )

    source: VisionDataSource = VisionDataSource.DIGITS
    path: PathText | None = Field(None, description="image-folder root: one folder per class")
    imbalance_ratio: StrictFloat = Field(
        100.0, ge=1.0, le=10000.0, description="head over tail class count (1 = balanced)"
    )
    max_per_class: StrictInt = Field(100, ge=1, description="training images of the head class")
    test_per_class: StrictInt = Field(
        50, ge=1, description="held-out images per class (a balanced test set)"
    )
    seed: StrictInt = Field(0, ge=0, description="seed of the held-out and long-tailed draws")

    @model_validator(mode="after")
    def _path_for_folder(self) -> VisionDataSpec:
        if self.source == VisionDataSource.IMAGE_FOLDER and not self.path:
            raise ValueError(self.CEL_RULES[0].message)
        return self


class TeacherSpec(ApiModel):
    """The CNN teacher, trained first on the same long-tailed data (weak augmentation)."""

    epochs: StrictInt = Field(30, ge=0, le=100_000)
    lr: StrictFloat = Field(2e-3, gt=0, le=10.0, description="AdamW peak learning rate")
    weight_decay: StrictFloat = Field(5e-4, ge=0.0, le=1.0)
    sam: StrictBool = Field(
        True, description="sharpness-aware minimization (flatter minima, low-rank features)"
    )
    rho: StrictFloat = Field(0.05, gt=0.0, le=5.0, description="SAM's neighbourhood radius")


class DistillSpec(ApiModel):
    """What the student's distillation token learns, and how (each piece can be switched off)."""

    enabled: StrictBool = Field(
        True, description="a distillation token trained on the teacher's argmax (off: a ViT)"
    )
    ood_augmentation: StrictBool = Field(
        True,
        description="train the student on strong views (random resized crops, mixup, cutmix) "
        "that the teacher, trained on weak ones, labels out of distribution",
    )
    drw: StrictBool = Field(
        True, description="deferred re-weighting of the distillation loss, late in training"
    )
    drw_start: StrictFloat = Field(
        0.75, ge=0.0, le=1.0, description="share of the student's epochs before DRW starts"
    )
    drw_beta: StrictFloat = Field(
        0.9999, ge=0.0, lt=1.0, description="β of the effective number (1 - β^n) / (1 - β)"
    )


class VisionAugmentSpec(ApiModel):
    """Weak views (random shifts) for the teacher; strong views for distillation."""

    shift: StrictInt = Field(1, ge=0, le=64, description="weak views: random shift, pixels")
    crop_scale: StrictFloat = Field(
        0.35, gt=0.0, le=1.0, description="strong views: smallest random resized crop (area)"
    )
    mixup_alpha: StrictFloat = Field(0.8, ge=0.0, le=10.0, description="0 = no mixup")
    cutmix_alpha: StrictFloat = Field(1.0, ge=0.0, le=10.0, description="0 = no cutmix")


class VisionConfig(ApiModel):
    """DeiT-LT: a CNN teacher, then a ViT student distilled from it, on long-tailed images.

    Rangwani et al., "DeiT-LT: Distillation Strikes Back for Vision Transformer Training on
    Long-Tailed Datasets" (CVPR 2024). `distill` switches the recipe's pieces for ablations.
    """

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "!has(self.distill) || !has(self.distill.enabled) || !self.distill.enabled"
            " || !has(self.teacher) || !has(self.teacher.epochs) || self.teacher.epochs > 0",
            "teacher.epochs must be at least 1 when distill.enabled is true",
            "teacher.epochs",
        ),
    )

    model: VisionModelSpec = Field(default_factory=VisionModelSpec)
    data: VisionDataSpec = Field(default_factory=VisionDataSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    augment: VisionAugmentSpec = Field(default_factory=VisionAugmentSpec)
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: OptimizerSpec(
            lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, grad_clip=0.0
        ),
        description="the student's AdamW",
    )
    schedule: ScheduleSpec = Field(
        default_factory=lambda: ScheduleSpec(kind=ScheduleKind.COSINE, warmup_steps=10),
        description="learning-rate schedule of each phase (teacher, then student)",
    )
    epochs: StrictInt = Field(60, ge=1, le=100_000, description="the student's epochs")
    batch_size: StrictInt = Field(64, ge=1, description="images per optimizer step, all workers")
    log_every: StrictInt = Field(10, ge=1)
    seed: StrictInt = Field(1234, ge=0, description="seed of weights, sampling and augmentation")
    precision: Precision = Precision.AUTO

    @model_validator(mode="after")
    def _teacher_for_distillation(self) -> VisionConfig:
        if self.distill.enabled and self.teacher.epochs < 1:
            raise ValueError(self.CEL_RULES[0].message)
        return self


# The three variants of the DeiT-LT paper's comparison, as `VisionConfig` overrides: a ViT
# alone; DeiT's plain distillation (a teacher without SAM, in-distribution views, no DRW);
# DeiT-LT (every piece on).
VISION_RECIPES: dict[str, dict[str, Any]] = {
    "vit": {"distill": {"enabled": False, "oodAugmentation": False, "drw": False}},
    "deit": {
        "teacher": {"sam": False},
        "distill": {"enabled": True, "oodAugmentation": False, "drw": False},
    },
    "deit-lt": {
        "teacher": {"sam": True},
        "distill": {"enabled": True, "oodAugmentation": True, "drw": True},
    },
}


WORKLOAD_KINDS = ("pretrain", "finetune", "quantize", "evaluate", "vision")

WorkloadConfig = PretrainConfig | FinetuneConfig | QuantizeConfig | EvaluateConfig | VisionConfig
