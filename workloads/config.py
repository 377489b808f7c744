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
    INSTRUCTIONS = "instructions"  # generated instruction-response pairs, chat template
    SAFETY = "safety"  # the shipped safety set's training split, chat template
    PASSKEY = "passkey"  # generated passkey-retrieval documents (long-context tests)


class FimSpec(ApiModel):
    """Fill-in-the-middle: documents cut at two random points and their middle moved last.

    Bavarian et al. 2022; the Granite code models train with rate 0.5 and both layouts.
    """

    rate: StrictFloat = Field(
        0.5, ge=0.0, le=1.0, description="share of training documents rearranged"
    )
    spm_rate: StrictFloat = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of the rearranged documents in suffix-prefix-middle order (the"
        " rest prefix-suffix-middle)",
    )


# Sources made of files in folders, which repository packing can group.
REPOSITORY_SOURCES = (DataSource.PYTHON_STDLIB, DataSource.FILES)


class Packing(StrEnum):
    """How documents are laid out in the token stream before it is cut into windows."""

    DOCUMENTS = "documents"  # each file a document, in path order
    # the files of one package or repository concatenated as one document: its __init__ first,
    # then its modules in import (dependency) order, ties and cycles in path order
    REPOSITORY = "repository"


class UpsampleSpec(ApiModel):
    """Repeat long documents in the training split (long-context data mixes)."""

    min_bytes: StrictInt = Field(
        ge=1, le=1_073_741_824, description="documents at least this long are repeated"
    )
    factor: StrictFloat = Field(
        ge=1.0,
        le=100.0,
        description="copies of each long document on average (2.5: two or three, seeded)",
    )


class DataSpec(ApiModel):
    """Where the training text comes from and how it is tokenized."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.source != 'files' || (has(self.paths) && size(self.paths) > 0)",
            "paths must list at least one file or glob when source is files",
        ),
        CelRule(
            "!has(self.packing) || self.packing != 'repository'"
            " || self.source in ['python-stdlib', 'files']",
            "packing repository needs source python-stdlib or files",
            "packing",
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
    packing: Packing = Field(
        Packing.DOCUMENTS,
        description="documents: one file per document; repository: one package per document",
    )
    upsample_long: UpsampleSpec | None = Field(
        None, description="repeat long training documents (the held-out split is left as is)"
    )
    fim: FimSpec | None = Field(
        None,
        description="fill-in-the-middle on training documents; set, the byte tokenizer gains"
        " four sentinel tokens (vocabulary 264)",
    )

    @model_validator(mode="after")
    def _paths_for_files(self) -> DataSpec:
        if self.source == DataSource.FILES and not self.paths:
            raise ValueError("paths must list at least one file or glob when source is files")
        if self.packing == Packing.REPOSITORY and self.source not in REPOSITORY_SOURCES:
            raise ValueError(
                "packing repository needs source python-stdlib or files"
                f" (source is {DataSource(self.source).value})"
            )
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


# A stage's or a data source's name: it appears in status, in `kubectl get` and in metrics.
STAGE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_.\-]{0,61}[a-z0-9])?$"
SourceName = Annotated[str, Field(pattern=STAGE_NAME_PATTERN, max_length=63)]
# As a map key: a CRD cannot constrain keys, so the models check them (`_source_names`).
SourceKey = Annotated[str, Field(max_length=63)]
MixtureWeight = Annotated[StrictFloat, Field(gt=0.0, le=1_000_000.0)]
MAX_STAGES = 16
MAX_SOURCES = 16


class StageSpec(ApiModel):
    """One stage of a staged run: its length, sequence length, RoPE base and data mixture.

    Stages run in order; a long-context recipe (Stallone et al. 2024, arXiv 2407.13739)
    raises seqLen and ropeTheta together from one stage to the next on the same model.
    """

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule("has(self.steps) != has(self.tokens)", "set exactly one of steps and tokens"),
        CelRule(
            "!has(self.schedule) || !has(self.steps) || !has(self.schedule.warmupSteps)"
            " || self.schedule.warmupSteps < self.steps",
            "schedule.warmupSteps must be smaller than the stage's steps",
            "schedule.warmupSteps",
        ),
    )

    name: SourceName = Field(description="shown in status, `kubectl get tj` and `carina get`")
    steps: StrictInt | None = Field(None, ge=1, le=100_000_000, description="optimizer steps")
    tokens: StrictInt | None = Field(
        None,
        ge=1,
        le=10**15,
        description="training tokens instead of steps: steps = ceil(tokens / (batchSize·seqLen))",
    )
    seq_len: StrictInt | None = Field(
        None, ge=8, le=1_048_576, description="tokens per sequence (unset: the job's seqLen)"
    )
    rope_theta: StrictFloat | None = Field(
        None, gt=0, le=1e12, description="RoPE base frequency (unset: the model's ropeTheta)"
    )
    mixture: dict[SourceKey, MixtureWeight] | None = Field(
        None,
        max_length=MAX_SOURCES,
        description="weight of each named source (normalized); unset: the job's data",
    )
    schedule: ScheduleSpec | None = Field(
        None,
        description="this stage's own learning-rate schedule over its steps (warmup, decay);"
        " unset: the job's schedule continues across stages",
    )
    checkpoint: StrictBool = Field(
        True, description="save at the stage's end and keep that checkpoint (never pruned)"
    )

    @model_validator(mode="after")
    def _length(self) -> StageSpec:
        if (self.steps is None) == (self.tokens is None):
            raise ValueError(f"stage {self.name!r}: set exactly one of steps and tokens")
        if (
            self.schedule is not None
            and self.steps is not None
            and self.schedule.warmup_steps >= self.steps
        ):
            raise ValueError(
                f"stage {self.name!r}: schedule.warmupSteps must be smaller than the stage's steps"
            )
        return self

    def resolved_steps(self, batch_size: int, seq_len: int) -> int:
        """Optimizer steps of this stage (from `tokens` at `batch_size` sequences of `seq_len`)."""
        if self.steps is not None:
            return self.steps
        assert self.tokens is not None
        return -(-self.tokens // (batch_size * seq_len))


class LongContextEvalSpec(ApiModel):
    """After the last step: held-out loss by position bucket, and passkey retrieval by length."""

    base_seq_len: StrictInt | None = Field(
        None, ge=8, le=1_048_576, description="the base context (unset: the first stage's seqLen)"
    )
    factors: list[Annotated[StrictFloat, Field(gt=0.0, le=64.0)]] = Field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
        min_length=1,
        max_length=8,
        description="passkey prompt lengths as multiples of baseSeqLen",
    )
    buckets: StrictInt = Field(8, ge=1, le=64, description="position buckets of the window")
    keys_per_depth: StrictInt = Field(
        2, ge=1, le=100, description="passkeys tried at each of five depths per length"
    )


class PretrainConfig(ApiModel):
    """Pretrain a decoder LM from scratch (or continue from `init`)."""

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.batchSize % self.microBatchSize == 0",
            "batchSize must be a multiple of microBatchSize",
        ),
        CelRule(
            "!has(self.schedule) || !has(self.schedule.warmupSteps) || has(self.stages) "
            "|| self.schedule.warmupSteps < self.steps",
            "schedule.warmupSteps must be smaller than steps",
        ),
        CelRule(
            "!has(self.stages) || self.stages.all(s, !has(s.mixture)"
            " || s.mixture.all(k, has(self.sources) && k in self.sources))",
            "stages[].mixture may only name sources defined in sources",
            "stages",
        ),
        CelRule(
            "!has(self.stages) || self.stages.all(a, self.stages.exists_one(b, b.name == a.name))",
            "stages[].name must be unique",
            "stages",
        ),
        CelRule(
            "!has(self.stages) || !has(self.model) || !has(self.model.maxSeqLen)"
            " || self.stages.all(s, !has(s.seqLen) || s.seqLen <= self.model.maxSeqLen)",
            "stages[].seqLen must not exceed model.maxSeqLen",
            "stages",
        ),
        CelRule(
            "!has(self.sources) || has(self.stages)",
            "sources are named by stages[].mixture: set stages too",
            "sources",
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
    sources: dict[SourceKey, DataSpec] | None = Field(
        None, max_length=MAX_SOURCES, description="named data sources that stages[].mixture weighs"
    )
    stages: list[StageSpec] | None = Field(
        None,
        min_length=1,
        max_length=MAX_STAGES,
        description="stages run in order (steps is then their sum); unset: one stage of steps"
        " on data",
    )
    long_context_eval: LongContextEvalSpec | None = Field(
        None, description="evaluate long-context use after the last step (rank 0)"
    )

    @model_validator(mode="after")
    def _batch(self) -> PretrainConfig:
        if self.batch_size % self.micro_batch_size:
            raise ValueError("batchSize must be a multiple of microBatchSize")
        if self.schedule.warmup_steps >= self.total_steps():
            raise ValueError("schedule.warmupSteps must be smaller than steps")
        return self

    @model_validator(mode="after")
    def _stages(self) -> PretrainConfig:
        if self.stages is None:
            if self.sources is not None:
                raise ValueError("sources are named by stages[].mixture: set stages too")
            return self
        names = [s.name for s in self.stages]
        known = sorted(self.sources or {})
        for source in known:
            if not re.fullmatch(STAGE_NAME_PATTERN, source):
                raise ValueError(
                    f"sources: {source!r} must be lowercase letters, digits, '-', '_' or '.',"
                    " starting and ending with a letter or digit (at most 63 characters)"
                )
        max_len = self.model.resolve().max_seq_len
        for i, stage in enumerate(self.stages):
            if names.count(stage.name) > 1:
                raise ValueError(f"stages[{i}].name: {stage.name!r} must be unique")
            for source in stage.mixture or {}:
                if source not in known:
                    raise ValueError(
                        f"stages[{i}].mixture names {source!r}, which sources does not define"
                        f" (defined: {', '.join(known) or 'none'})"
                    )
            seq_len = stage.seq_len or self.seq_len
            if seq_len > max_len:
                raise ValueError(
                    f"stages[{i}].seqLen ({seq_len}) must not exceed model.maxSeqLen ({max_len})"
                )
        if "steps" in self.model_fields_set and self.steps != self.total_steps():
            raise ValueError(
                f"steps ({self.steps}) must equal the stages' total ({self.total_steps()})"
                " or be left unset"
            )
        return self

    def total_steps(self) -> int:
        """Optimizer steps of the whole run: the stages' sum, else `steps`."""
        if not self.stages:
            return self.steps
        return sum(
            s.resolved_steps(self.batch_size, s.seq_len or self.seq_len) for s in self.stages
        )


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

    generator: Literal["grounded-qa", "code-choice", "python-stdlib", "safety"] | None = Field(
        None,
        description="python-stdlib: the held-out documents of the pretraining corpus; safety:"
        " the shipped safety set's held-out prompts",
    )
    path: PathText | None = Field(None, description="JSONL file")
    format: Literal["squad2", "mmlu", "hellaswag", "text", "carina-qa"] | None = None
    examples: StrictInt = Field(512, ge=1, le=10_000_000)
    seed: StrictInt = Field(0, ge=0)


class SSREngine(StrEnum):
    AUTO = "auto"  # Ray Data from `rayMinRows` examples on, when ray is installed
    PLAIN = "plain"  # one loop in the rank-0 process
    RAY = "ray"  # Ray Data actor pools (needs `pip install carina[ray]`)


class SSRSpec(ApiModel):
    """How SSR's generation and judging run: a plain loop, or Ray Data actor pools."""

    engine: SSREngine = SSREngine.AUTO
    ray_min_rows: StrictInt = Field(
        20_000, ge=1, description="auto: examples from which Ray Data is used"
    )
    generator_actors: StrictInt = Field(1, ge=1, le=256, description="Ray: generating actors")
    judge_actors: StrictInt = Field(1, ge=1, le=256, description="Ray: judging actors")
    actor_cpus: StrictFloat = Field(
        0.5,
        gt=0,
        le=64,
        description="Ray: CPUs each actor reserves; fractions leave Ray Data's own tasks a CPU",
    )
    gpus_per_generator: StrictFloat | None = Field(
        None,
        ge=0,
        le=1,
        description="Ray: GPU share of each generating actor (unset: the visible GPUs split "
        "evenly among them; 0 on a CPU worker)",
    )
    batch_size: StrictInt = Field(64, ge=1, le=4096, description="Ray: rows per batch")


class FinetuneConfig(ApiModel):
    """Supervised fine-tuning of a base checkpoint: plain SFT or Selective Self-Rehearsal."""

    base: CheckpointInput = Field(description="checkpoint to start from")
    mode: FinetuneMode = FinetuneMode.SSR
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    ssr: SSRSpec = Field(default_factory=SSRSpec)
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
    kind: Literal["perplexity", "multiple-choice", "refusal", "infill", "safety"] = Field(
        description="infill: exact match of generated middles (PSM and SPM) on documents;"
        " safety: refusal of harmful prompts and over-refusal of benign ones"
    )
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


# ---------------------------------------------------------------- sweep (learning-rate transfer)


class SweepObjective(StrEnum):
    PROXY = "proxy"  # train the proxy model: the final held-out loss after the decay
    SYNTHETIC = "synthetic"  # an analytic loss whose optimum follows a known power law


class SyntheticObjective(ApiModel):
    """An analytic trial: loss = 1 + curvature·(ln η − ln η*)², η* = β·a·T^b.

    Its optimum is known, so a sweep over it checks the fit end to end in seconds.
    """

    a: StrictFloat = Field(4.6, gt=0, description="amplitude of the true η*/β = a·T^b")
    b: StrictFloat = Field(-0.51, ge=-5.0, le=5.0, description="exponent of the true law")
    curvature: StrictFloat = Field(0.05, gt=0, description="loss per (ln η − ln η*)²")
    seconds: StrictFloat = Field(
        0.0, ge=0.0, le=3600.0, description="time each trial takes (demos, preemption tests)"
    )


class SweepTarget(ApiModel):
    """The run the sweep recommends a Power-scheduler setting for."""

    tokens: StrictInt = Field(10_000_000_000, ge=1, description="the target run's tokens T")
    batch_size: StrictInt = Field(1024, ge=1, description="the target run's sequences per step")
    seq_len: StrictInt | None = Field(
        None, ge=8, le=1_048_576, description="its sequence length (default: the sweep's)"
    )


# Ray's ports on a pod: fixed, so the head's address and the container ports are known when
# the pods are rendered. On one machine (the embedded platform) every node of a gang shares
# the host, so the head listens on the gang's MASTER_PORT instead and the rest are chosen free.
RAY_PORTS: dict[str, int] = {
    "ray-gcs": 6379,
    "ray-node-mgr": 6380,
    "ray-obj-mgr": 6381,
    "ray-agent": 6382,
    "ray-metrics": 6383,
    "ray-env-agent": 6384,
}
RAY_WORKER_PORTS = (10002, 10101)  # the range Ray's worker processes listen in, inclusive


class SweepConfig(ApiModel):
    """A learning-rate transfer sweep (Shen et al. 2024, arXiv 2408.13359, §3-4) on Ray Tune.

    One trial per (batchSize, tokens, lr) of the grid trains the µP proxy model under the
    schedule (WSD by default) for `tokens` tokens; its score is the held-out loss after the
    final decay. Per (batchSize, tokens) the best lr (a parabola in ln lr through the grid's
    minimum) feeds the fit ln(η/β) = ln a + b·ln T, and the report recommends the Power
    scheduler's a, b and lrMax for `target`.
    """

    CEL_RULES: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "self.objective == 'synthetic' || self.tokens.all(t, self.batchSizes.all(b,"
            " t >= 4 * b * self.seqLen))",
            "every tokens value must give at least 4 steps of batchSize·seqLen tokens",
            "tokens",
        ),
    )

    model: ModelSpec = Field(default_factory=ModelSpec, description="the µP proxy model")
    data: DataSpec = Field(default_factory=DataSpec)
    optimizer: OptimizerSpec = Field(
        default_factory=OptimizerSpec, description="AdamW (its lr is the grid's)"
    )
    schedule: ScheduleSpec = Field(
        default_factory=ScheduleSpec, description="each trial's schedule (wsd by default)"
    )
    warmup_fraction: StrictFloat = Field(
        0.05, ge=0.0, lt=0.5, description="warmup steps as a share of each trial's steps"
    )
    batch_sizes: list[StrictInt] = Field(
        [8, 16], min_length=1, max_length=16, description="β: sequences per step"
    )
    tokens: list[StrictInt] = Field(
        [65_536, 131_072, 262_144],
        min_length=1,
        max_length=16,
        description="T: tokens each trial trains on",
    )
    lrs: list[StrictFloat] = Field(
        [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2],
        min_length=3,
        max_length=32,
        description="peak learning rates (at least 3, for the parabola)",
    )
    seq_len: StrictInt = Field(64, ge=8, le=1_048_576, description="tokens per sequence")
    eval_batches: StrictInt = Field(8, ge=1, le=1024, description="held-out batches per score")
    seed: StrictInt = Field(1234, ge=0)
    objective: SweepObjective = SweepObjective.PROXY
    synthetic: SyntheticObjective = Field(default_factory=SyntheticObjective)
    trial_cpus: StrictFloat = Field(1.0, gt=0, le=256, description="CPUs each trial holds")
    trial_gpus: StrictFloat = Field(
        0.0, ge=0, le=8, description="GPUs each trial holds (a fraction packs trials on a GPU)"
    )
    max_concurrent_trials: StrictInt | None = Field(
        None, ge=1, le=4096, description="trials at once (default: as many as fit)"
    )
    max_failures: StrictInt = Field(2, ge=0, le=100, description="retries of a failed trial")
    object_store_mb: StrictInt = Field(
        512, ge=80, le=1_048_576, description="Ray's object store per node (MiB; in /dev/shm)"
    )
    target: SweepTarget = Field(default_factory=SweepTarget)

    @model_validator(mode="after")
    def _steps_per_trial(self) -> SweepConfig:
        if self.objective == SweepObjective.PROXY:
            for t in self.tokens:
                for b in self.batch_sizes:
                    if t < 4 * b * self.seq_len:
                        raise ValueError(self.CEL_RULES[0].message)
        return self

    def grid(self) -> list[tuple[int, int, float]]:
        """Every (batchSize, tokens, lr) of the sweep, in a fixed order."""
        return [(b, t, lr) for b in self.batch_sizes for t in self.tokens for lr in self.lrs]


WORKLOAD_KINDS = ("pretrain", "finetune", "quantize", "evaluate", "vision", "sweep")

WorkloadConfig = (
    PretrainConfig | FinetuneConfig | QuantizeConfig | EvaluateConfig | VisionConfig | SweepConfig
)
