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

A run started from `init` continues the Power scheduler's token clock: its offset is the init
checkpoint's `tokensSeen` (or `schedule.tokenOffset` when set), and each checkpoint's
`tokensSeen` includes it, so chained continuations keep counting.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext
from typing import Any

import torch

from carina.workloads.config import ExitCode, Parallelism, PretrainConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.data import Corpus, ShardedSampler, build_corpus
from carina.workloads.errors import WorkerError
from carina.workloads.models.kurtosis import OutputKurtosis
from carina.workloads.models.quant_layers import (
    calibrate_clip_values,
    clip_parameters,
    quant_layers,
    with_clip_group,
)
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.runtime import checkpoint, distributed
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.flops import flops_per_token
from carina.workloads.runtime.loop import RunLoop, StepCallback, StepReport, Workload, run_workload
from carina.workloads.runtime.loop import StepRecord as StepRecord  # what `on_step` receives
from carina.workloads.runtime.precision import autocast_dtype
from carina.workloads.runtime.schedules import learning_rate
from carina.workloads.runtime.storage import open_store


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
        self.corpus: Corpus = build_corpus(cfg.data, cfg.seq_len, cfg.seed)
        self.arch = cfg.model.resolve(vocab_size=self.corpus.tokenizer.vocab_size)
        if cfg.qat is not None:  # the model builds its quantizers from the architecture
            self.arch = dataclasses.replace(self.arch, activation_bits=cfg.qat.activation_bits)
        if cfg.seq_len > self.arch.max_seq_len:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"config.seqLen ({cfg.seq_len}) exceeds the model's maxSeqLen "
                f"({self.arch.max_seq_len})",
            )
        if self.corpus.tokenizer.vocab_size > self.arch.vocab_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG, "config.model.vocabSize is below the tokenizer's"
            )
        self.loop = RunLoop(self, ctx, d, preempt, cfg.steps, cfg.log_every)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = Transformer(self.arch).to(d.device)
        self.flops_token = flops_per_token(
            model.num_params(exclude_embedding=True) - len(clip_parameters(model)),
            self.arch,
            cfg.seq_len,
        )
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
        return {
            "step": self.step,
            "totalSteps": self.cfg.steps,
            "data": self.sampler.state_dict(),
            "tokensSeen": self.token_offset + self.step * self.cfg.batch_size * self.cfg.seq_len,
            "tokenOffset": self.token_offset,
            "seed": self.cfg.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["data"])
        self.token_offset = int(state.get("tokenOffset", 0))

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
            totalSteps=self.cfg.steps,
            worldSize=self.d.world_size,
            params=self.raw.num_params(),
            device=str(self.d.device),
        )

    def train_step(self) -> StepReport:
        """One optimizer step on `batchSize` sequences in `batchSize / microBatchSize` parts."""
        cfg = self.cfg
        accum = cfg.batch_size // cfg.micro_batch_size
        lr = learning_rate(
            self.step,
            cfg.schedule,
            cfg.optimizer.lr,
            cfg.steps,
            cfg.batch_size,
            cfg.seq_len,
            self.token_offset,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        total = torch.zeros((), device=self.d.device)
        kurt = torch.zeros((), device=self.d.device)
        hooks, lam = self.hooks, cfg.qat.kurtosis_lambda if cfg.qat is not None else 0.0
        for micro in range(accum):
            x, y = self.corpus.train.batch(self.sampler.next_indices(cfg.micro_batch_size))
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
        tokens = cfg.batch_size * cfg.seq_len
        fields = {"kurtosis": round(float(kurt) / accum, 3)} if hooks is not None else {}
        return StepReport(total / accum, lr, tokens, tokens * self.flops_token, fields)

    def after_step(self) -> None:
        """The held-out loss every `evalEvery` steps and at the last."""
        every = self.cfg.eval_every
        if every and (self.step % every == 0 or self.step == self.cfg.steps):
            eval_loss = self.evaluate()
            if eval_loss is not None:
                self.telemetry.on_eval(eval_loss)
                self.loop.log("eval", step=self.step, loss=round(eval_loss, 5))

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
