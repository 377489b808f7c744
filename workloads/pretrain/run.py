"""The `pretrain` workload: `run_pretrain(config, context)` -> ExitCode.

Launch (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/ckpt \\
        torchrun --nproc-per-node 2 -m carina.workloads

Each optimizer step draws `batchSize` sequences in `batchSize / microBatchSize` micro-batches
(gradient accumulation), each split evenly across ranks. The run loop every workload shares
(`runtime/loop.py`) resumes from the newest intact checkpoint under CARINA_CHECKPOINT_URI,
saves every CARINA_CHECKPOINT_INTERVAL steps and at the end, and on SIGTERM saves at the next
step boundary and exits PREEMPTED (75).

Grace period: torchrun 2.15 forwards SIGTERM to its workers and SIGKILLs them 30 s later
(`--shutdown-timeout`, env TORCH_ELASTIC_SHUTDOWN_TIMEOUT, default 30; launcher/api.py), so a
pod's terminationGracePeriodSeconds must cover that timeout, which must cover one step plus
one save (see carina_checkpoint_save_seconds). Note that torchrun itself exits 1 when a worker
fails, whatever the worker's code; substrates that need the contract's codes start one worker
process per rank with the torchrun variables set, as the embedded substrate does.

`qat` (Nrusimha et al. 2024, arXiv 2404.03605) pretrains under W4A4 conditions from step 0, as
the paper does (outlier channels appear early in training): every block linear's input is
fake-quantized with learned clip values, calibrated on `qat.calibrationBatches` training
batches before the first step, and the loss is CE + λ·(mean output kurtosis of those layers).
The checkpoints record the activation bits in their architecture and carry the clip values.

`stages` (pretrain/stages.py) run one model through stages of their own length, seqLen, RoPE
θ, data mixture and schedule; the trainer state records the stage and the step within it, so a
resumed worker re-enters that stage (its windows, sampler and θ) and goes on at the same
sequence. A run without stages is one stage on `data`, trained exactly as before.

A run started from `init` continues the Power scheduler's token clock: its offset is the init
checkpoint's `tokensSeen` (or `schedule.tokenOffset` when set), and each checkpoint's
`tokensSeen` includes it, so chained continuations keep counting.
"""

from __future__ import annotations

import dataclasses
import json
import math
from contextlib import nullcontext
from typing import Any

import torch

from carina.workloads.config import ExitCode, Parallelism, PretrainConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.data import Corpus, ShardedSampler, build_corpus
from carina.workloads.errors import WorkerError
from carina.workloads.longcontext import evaluate_long_context
from carina.workloads.mixture import Mixture, MixtureSampler
from carina.workloads.models.kurtosis import OutputKurtosis
from carina.workloads.models.quant_layers import (
    calibrate_clip_values,
    clip_parameters,
    quant_layers,
    with_clip_group,
)
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.pretrain.stages import (
    Stage,
    sources,
    stage_at,
    stage_learning_rate,
    stage_plan,
    tokens_before,
)
from carina.workloads.runtime import checkpoint, distributed
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.flops import flops_per_token
from carina.workloads.runtime.loop import RunLoop, StepCallback, StepReport, Workload, run_workload
from carina.workloads.runtime.loop import StepRecord as StepRecord  # what `on_step` receives
from carina.workloads.runtime.precision import autocast_dtype
from carina.workloads.runtime.storage import open_store

# The long-context evaluation's report, beside the checkpoints under CARINA_CHECKPOINT_URI.
LONG_CONTEXT_REPORT = "long-context-eval.json"


def tokens_seen(ref: checkpoint.CheckpointRef) -> int:
    """The `tokensSeen` a checkpoint's trainer state records (0 when it has none)."""
    base = ref.uri.rstrip("/").rpartition("/")[0]
    trainer = checkpoint.read_manifest(open_store(base), ref.step).get("trainer") or {}
    return int(trainer.get("tokensSeen", 0))


def check_world_size(cfg: PretrainConfig, world_size: int) -> None:
    """Refuse a micro-batch that does not split evenly across ranks (before any rendezvous)."""
    if cfg.micro_batch_size % world_size:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.microBatchSize ({cfg.micro_batch_size}) must be a multiple of "
            f"WORLD_SIZE ({world_size})",
        )


class Trainer(Workload):
    """State of one pretraining run on one rank."""

    def __init__(
        self, cfg: PretrainConfig, ctx: WorkerContext, d: Dist, preempt: PreemptionFlag
    ) -> None:
        check_world_size(cfg, d.world_size)
        self.cfg, self.ctx, self.d = cfg, ctx, d
        if d.device.type == "cpu":
            # Adam's second moments decay into denormals, which x86 computes 10-100x slower.
            torch.set_flush_denormal(True)
        if cfg.qat is not None and cfg.parallelism == Parallelism.FSDP:
            raise WorkerError(
                ExitCode.BAD_CONFIG, "config.qat needs parallelism ddp (clip values are scalars)"
            )
        self.plan: list[Stage] = stage_plan(cfg)
        self.staged = bool(cfg.stages)
        self.corpora = self._build_corpora()
        self.corpus: Corpus = self.corpora[self.plan[0].mixture[0][0]]
        self.arch = cfg.model.resolve(vocab_size=self.corpus.tokenizer.vocab_size)
        if cfg.qat is not None:  # the model builds its quantizers from the architecture
            self.arch = dataclasses.replace(self.arch, activation_bits=cfg.qat.activation_bits)
        longest = max(self.plan, key=lambda s: s.seq_len)
        if longest.seq_len > self.arch.max_seq_len:
            where = f"stages[{longest.index}].seqLen" if self.staged else "seqLen"
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"config.{where} ({longest.seq_len}) exceeds the model's maxSeqLen "
                f"({self.arch.max_seq_len})",
            )
        if self.corpus.tokenizer.vocab_size > self.arch.vocab_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG, "config.model.vocabSize is below the tokenizer's"
            )
        self.loop = RunLoop(self, ctx, d, preempt, self.plan[-1].end, cfg.log_every)
        self.loop.checkpointer.pinned = frozenset(
            s.end for s in self.plan if s.checkpoint and s.end < self.plan[-1].end
        )
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = Transformer(self.arch).to(d.device)
        self.non_embedding_params = model.num_params(exclude_embedding=True) - len(
            clip_parameters(model)
        )
        self.flops_token = flops_per_token(self.non_embedding_params, self.arch, cfg.seq_len)
        self.hooks = OutputKurtosis(quant_layers(model)) if cfg.qat is not None else None
        self.raw: Transformer = model
        self.model = distributed.wrap(model, cfg.parallelism, d)
        if cfg.compile:
            self.raw.compile()
        opt = cfg.optimizer
        groups = param_groups(model, opt.weight_decay)
        if cfg.qat is not None:
            groups = with_clip_group(groups, model, cfg.qat.clip_lr / opt.lr)
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=opt.lr,
            betas=opt.betas,
            eps=opt.eps,
            fused=d.device.type == "cuda",
        )
        self.amp = autocast_dtype(cfg.precision, d.device)
        self.sampler = ShardedSampler(len(self.corpus.train), cfg.seed, d.rank, d.world_size)
        self.stage: Stage = self.plan[0]
        self.mixture: Mixture | None = None
        self.mix_sampler: MixtureSampler | None = None
        if self.staged:
            self.enter_stage(self.plan[0])
        self.step = 0
        self.token_offset = cfg.schedule.token_offset or 0
        if self.loop.resume() is None:
            for p in clip_parameters(model):  # NaN: not loaded from a checkpoint, calibrate
                p.data.fill_(math.nan)
            if cfg.init:
                ref = checkpoint.load_uri(cfg.init, self.raw)
                if cfg.schedule.token_offset is None:
                    self.token_offset = tokens_seen(ref)
                self.loop.log(
                    "initialized", uri=cfg.init, step=ref.step, tokenOffset=self.token_offset
                )
            if any(bool(p.detach().isnan()) for p in clip_parameters(model)):
                self.calibrate()

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint needs beyond weights and optimizer to continue exactly."""
        state: dict[str, Any] = {
            "step": self.step,
            "totalSteps": self.plan[-1].end,
            "data": self.sampler.state_dict(),
            "tokensSeen": self.token_offset
            + tokens_before(self.plan, self.step, self.cfg.batch_size),
            "tokenOffset": self.token_offset,
            "seed": self.cfg.seed,
        }
        if self.mix_sampler is not None:
            state["data"] = self.mix_sampler.state_dict()
            state["stage"] = {
                "index": self.stage.index,
                "name": self.stage.name,
                "step": self.step - self.stage.start,  # steps done within the stage
                "seqLen": self.stage.seq_len,
                "ropeTheta": self.stage.rope_theta,
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.token_offset = int(state.get("tokenOffset", 0))
        if not self.staged:
            self.sampler.load_state_dict(state["data"])
            return
        saved = state.get("stage") or {}
        index = int(saved.get("index", -1))
        if not 0 <= index < len(self.plan) or self.plan[index].name != saved.get("name"):
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"the checkpoint at step {self.step} was saved in stage {saved.get('name')!r}"
                f" (index {index}), which config.stages no longer has at that index",
            )
        stage = self.plan[index]
        if stage.start + int(saved["step"]) != self.step:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"the checkpoint's stage {stage.name!r} starts at step"
                f" {self.step - int(saved['step'])}, config.stages puts it at {stage.start}",
            )
        self.enter_stage(stage)
        assert self.mix_sampler is not None
        self.mix_sampler.load_state_dict(state["data"])

    # ------------------------------------------------------------ stages

    def _build_corpora(self) -> dict[str, Corpus]:
        """The corpus of every source a stage names, windowed for the first stage using it."""
        specs = sources(self.cfg)
        corpora: dict[str, Corpus] = {}
        for stage in self.plan:
            for name, _ in stage.mixture:
                if name not in corpora:
                    corpora[name] = build_corpus(specs[name], stage.seq_len, self.cfg.seed)
        vocabularies = {n: c.tokenizer.vocab_size for n, c in corpora.items()}
        if len(set(vocabularies.values())) > 1:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"config.sources must share one tokenizer (vocabulary sizes {vocabularies})",
            )
        return corpora

    def enter_stage(self, stage: Stage) -> None:
        """Window the stage's sources at its seqLen, start its sampler, set RoPE's θ."""
        self.stage = stage
        names = [name for name, _ in stage.mixture]
        for name in names:
            self.corpora[name] = self.corpora[name].with_seq_len(stage.seq_len)
            if len(self.corpora[name].train) == 0:
                raise WorkerError(
                    ExitCode.BAD_DATA,
                    f"stage {stage.name!r}: source {name!r} has fewer than seqLen+1 ="
                    f" {stage.seq_len + 1} tokens",
                )
        weights = [w for _, w in stage.mixture]
        self.mixture = Mixture(names, [self.corpora[n] for n in names], weights)
        self.mix_sampler = MixtureSampler(
            [len(self.corpora[n].train) for n in names],
            weights,
            self.cfg.seed + 1_000 * stage.index,
            self.d.rank,
            self.d.world_size,
        )
        # Held-out loss on the heaviest source, at this stage's length.
        self.corpus = self.corpora[max(stage.mixture, key=lambda m: m[1])[0]]
        self.arch = dataclasses.replace(self.arch, rope_theta=stage.rope_theta)
        self.raw.set_rope(stage.rope_theta)
        self.flops_token = flops_per_token(self.non_embedding_params, self.arch, stage.seq_len)
        self.telemetry.on_stage(stage.index, stage.name, len(self.plan))

    def stage_fields(self) -> dict[str, Any]:
        """The current stage as event fields (none for a run without stages)."""
        if not self.staged:
            return {}
        stage = self.stage
        return {
            "stage": stage.name,
            "stageIndex": stage.index,
            "stages": len(self.plan),
            "stageStep": self.step - stage.start,
            "seqLen": stage.seq_len,
            "ropeTheta": stage.rope_theta,
            "mixture": dict(stage.mixture),
        }

    def checkpoint_due(self) -> bool:
        """A stage that asks for it is saved at its end (and that checkpoint is kept)."""
        return self.staged and self.stage.checkpoint and self.step == self.stage.end

    def next_batch(self, micro_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the next global micro-batch."""
        if self.mixture is not None and self.mix_sampler is not None:
            return self.mixture.batch(self.mix_sampler.next_picks(micro_batch))
        return self.corpus.train.batch(self.sampler.next_indices(micro_batch))

    def calibrate(self) -> None:
        """Initial clip values: the MSE-best range of each layer's inputs on fixed batches.

        The batches come from their own sampler, the same on every rank, so every rank sets
        the same clip values.
        """
        assert self.cfg.qat is not None
        sampler = ShardedSampler(len(self.corpus.train), self.cfg.seed + 1, 0, 1)
        batches = [
            self.corpus.train.batch(sampler.next_indices(self.cfg.micro_batch_size))[0].to(
                self.d.device
            )
            for _ in range(self.cfg.qat.calibration_batches)
        ]
        ranges = calibrate_clip_values(self.raw, batches)
        self.loop.log("calibrated", layers=len(ranges), batches=len(batches))

    # ------------------------------------------------------------ steps

    def _autocast(self) -> Any:
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.d.device.type, dtype=self.amp)

    def start(self) -> None:
        self.loop.log(
            "start",
            step=self.step,
            totalSteps=self.plan[-1].end,
            worldSize=self.d.world_size,
            params=self.raw.num_params(),
            device=str(self.d.device),
            **self.stage_fields(),
        )

    def train_step(self) -> StepReport:
        """One optimizer step on `batchSize` sequences in `batchSize / microBatchSize` parts."""
        cfg = self.cfg
        accum = cfg.batch_size // cfg.micro_batch_size
        if self.staged and stage_at(self.plan, self.step) is not self.stage:
            self.enter_stage(stage_at(self.plan, self.step))
            self.loop.log("stage", step=self.step, **self.stage_fields())
        lr = stage_learning_rate(cfg, self.plan, self.step, self.token_offset)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        total = torch.zeros((), device=self.d.device)
        kurt = torch.zeros((), device=self.d.device)
        hooks, lam = self.hooks, cfg.qat.kurtosis_lambda if cfg.qat is not None else 0.0
        for micro in range(accum):
            x, y = self.next_batch(cfg.micro_batch_size)
            x = x.to(self.d.device, non_blocking=True)
            y = y.to(self.d.device, non_blocking=True)
            with distributed.grad_sync(self.model, sync=micro == accum - 1), self._autocast():
                with hooks if hooks is not None else nullcontext():
                    _, loss = self.model(x, y)
                assert loss is not None
                objective = loss
                if hooks is not None:  # L = CE + λ·Kurt (the QAT paper's regularizer)
                    k = hooks.loss()
                    kurt += k.detach()
                    objective = loss + lam * k if lam > 0 else loss
                (objective / accum).backward()
            total += loss.detach()
        trainable = [p for p in self.raw.parameters() if hooks is None or p.ndim > 0]
        if cfg.optimizer.grad_clip > 0:
            # Clip values (0-d) stay out of the norm: their gradients sum over whole tensors.
            torch.nn.utils.clip_grad_norm_(trainable, cfg.optimizer.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hooks is not None:
            for layer in quant_layers(self.raw).values():
                layer.act_quant.clamp_order()
        self.step += 1
        tokens = cfg.batch_size * self.stage.seq_len
        fields: dict[str, Any] = {}
        if hooks is not None:
            fields["kurtosis"] = round(float(kurt) / accum, 3)
        if self.staged:
            fields["stage"] = self.stage.name
        return StepReport(total / accum, lr, tokens, tokens * self.flops_token, fields)

    def after_step(self) -> None:
        """The held-out loss every `evalEvery` steps and at the last."""
        every = self.cfg.eval_every
        if every and (self.step % every == 0 or self.step == self.plan[-1].end):
            eval_loss = self.evaluate()
            if eval_loss is not None:
                self.telemetry.on_eval(eval_loss)
                self.loop.log("eval", step=self.step, loss=round(eval_loss, 5))

    def finish(self) -> None:
        """The long-context evaluation, when asked for: an event and a report in the store."""
        spec = self.cfg.long_context_eval
        if spec is None or not self.d.is_main:
            return None
        base = spec.base_seq_len or self.plan[0].seq_len
        val = self.corpus.val
        if len(val) == 0:
            val = self.corpus.train  # no held-out split: the position profile of training data
        report = evaluate_long_context(
            self.raw,
            self.corpus.tokenizer,
            val,
            base,
            spec.factors,
            spec.buckets,
            spec.keys_per_depth,
            seed=self.cfg.seed,
            device=self.d.device,
        )
        self.raw.set_rope(self.arch.rope_theta, max_len=self.arch.max_seq_len)
        self.loop.log("long-context-eval", step=self.step, **report.to_dict())
        if self.loop.store is not None:
            self.loop.store.put_bytes(
                json.dumps(report.to_dict(), indent=1).encode(), LONG_CONTEXT_REPORT
            )
        return None

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean held-out loss over `evalBatches` fixed micro-batches (None without val data)."""
        val = self.corpus.val
        if len(val) == 0:
            return None
        self.raw.eval()
        per_rank = self.cfg.micro_batch_size // self.d.world_size
        losses = []
        for b in range(self.cfg.eval_batches):
            first = b * self.cfg.micro_batch_size + self.d.rank * per_rank
            x, y = val.batch([(first + j) % len(val) for j in range(per_rank)])
            with self._autocast():
                _, loss = self.raw(x.to(self.d.device), y.to(self.d.device))
            assert loss is not None
            losses.append(loss.float())
        self.raw.train()
        return float(distributed.mean(torch.stack(losses).mean(), self.d).item())


def run_pretrain(
    cfg: PretrainConfig, ctx: WorkerContext, on_step: StepCallback | None = None
) -> ExitCode:
    """Run (or resume) a pretraining job; the worker contract's entry point for `pretrain`."""
    check_world_size(cfg, ctx.world_size)
    try:
        return run_workload(ctx, lambda d, preempt: Trainer(cfg, ctx, d, preempt), on_step)
    finally:
        # Flushing denormals is this run's choice, not its caller's: a process that goes on
        # (a test, a benchmark) gets IEEE floats back.
        torch.set_flush_denormal(False)
