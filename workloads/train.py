"""The pretraining loop: `run_pretrain(config, context)` -> ExitCode.

Launch (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/ckpt \\
        torchrun --nproc-per-node 2 -m carina.workloads

Each optimizer step draws `batchSize` sequences in `batchSize / microBatchSize` micro-batches
(gradient accumulation), each split evenly across ranks. The loop resumes from the newest
intact checkpoint under CARINA_CHECKPOINT_URI, saves every CARINA_CHECKPOINT_INTERVAL steps
and at the end, and on SIGTERM saves at the next step boundary and exits PREEMPTED (75).

Grace period: torchrun 2.15 forwards SIGTERM to its workers and SIGKILLs them 30 s later
(`--shutdown-timeout`, env TORCH_ELASTIC_SHUTDOWN_TIMEOUT, default 30; launcher/api.py), so a
pod's terminationGracePeriodSeconds must cover that timeout, which must cover one step plus
one save (see carina_checkpoint_save_seconds). Note that torchrun itself exits 1 when a worker
fails, whatever the worker's code; substrates that need the contract's codes start one worker
process per rank with the torchrun variables set, as the embedded substrate does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from carina.workloads import checkpoint, distributed
from carina.workloads.config import ExitCode, Precision, PretrainConfig
from carina.workloads.data import Corpus, ShardedSampler, build_corpus
from carina.workloads.distributed import Dist, PreemptionFlag
from carina.workloads.errors import WorkerError
from carina.workloads.flops import flops_per_token, mfu, peak_flops
from carina.workloads.model import Transformer, param_groups
from carina.workloads.schedules import learning_rate
from carina.workloads.storage import open_store
from carina.workloads.telemetry import Telemetry, log_event, write_termination_message
from carina.workloads.worker import WorkerContext


@dataclass(frozen=True)
class StepRecord:
    """What a logged optimizer step produced (`on_step` runs every `logEvery` steps)."""

    step: int  # steps completed, 1-based
    loss: float  # mean over the global batch
    lr: float
    tokens_per_second: float  # all ranks, since the previous logged step


StepCallback = Callable[[StepRecord, PreemptionFlag], None]


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """bf16 under `auto` on GPUs and under `bf16` anywhere; None means plain fp32."""
    p = Precision(precision)
    if p == Precision.BF16 or (p == Precision.AUTO and device.type == "cuda"):
        return torch.bfloat16
    return None


def check_world_size(cfg: PretrainConfig, world_size: int) -> None:
    """Refuse a micro-batch that does not split evenly across ranks (before any rendezvous)."""
    if cfg.micro_batch_size % world_size:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.microBatchSize ({cfg.micro_batch_size}) must be a multiple of "
            f"WORLD_SIZE ({world_size})",
        )


class Trainer:
    """State of one pretraining run on one rank."""

    def __init__(
        self, cfg: PretrainConfig, ctx: WorkerContext, d: Dist, preempt: PreemptionFlag
    ) -> None:
        check_world_size(cfg, d.world_size)
        self.cfg, self.ctx, self.d, self.preempt = cfg, ctx, d, preempt
        if d.device.type == "cpu":
            # Adam's second moments decay into denormals, which x86 computes 10-100x slower.
            torch.set_flush_denormal(True)
        self.corpus: Corpus = build_corpus(cfg.data, cfg.seq_len, cfg.seed)
        self.arch = cfg.model.resolve(vocab_size=self.corpus.tokenizer.vocab_size)
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
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = Transformer(self.arch).to(d.device)
        self.flops_token = flops_per_token(
            model.num_params(exclude_embedding=True), self.arch, cfg.seq_len
        )
        self.peak = peak_flops(d.device)
        self.raw = model
        self.model = distributed.wrap(model, cfg.parallelism, d)
        if cfg.compile:
            self.raw.compile()
        opt = cfg.optimizer
        self.optimizer = torch.optim.AdamW(
            param_groups(model, opt.weight_decay),
            lr=opt.lr,
            betas=opt.betas,
            eps=opt.eps,
            fused=d.device.type == "cuda",
        )
        self.amp = autocast_dtype(cfg.precision, d.device)
        self.sampler = ShardedSampler(len(self.corpus.train), cfg.seed, d.rank, d.world_size)
        self.step = 0
        self.saved_step: int | None = None
        self.store = open_store(ctx.checkpoint_uri) if ctx.checkpoint_uri else None
        self.telemetry = Telemetry(
            ctx.job, ctx.namespace, d.rank, cfg.steps, ctx.metrics_port, ctx.progress_file
        )
        self._restore()

    # ------------------------------------------------------------ state

    def _restore(self) -> None:
        """Resume from the newest intact checkpoint, or start from `init` weights."""
        on_skip = self.telemetry.on_checkpoint_skipped
        restored = (
            checkpoint.restore_latest(self.store, self.raw, self.optimizer, on_skip)
            if self.store
            else None
        )
        if restored is not None:
            trainer = restored.manifest["trainer"]
            self.step = self.saved_step = int(trainer["step"])
            self.sampler.load_state_dict(trainer["data"])
            self.telemetry.on_resume(restored.ref)
            uri = restored.ref.uri
            self._log("resumed", step=self.step, uri=uri, restart=self.ctx.restart)
        elif self.cfg.init:
            ref = checkpoint.load_uri(self.cfg.init, self.raw)
            self._log("initialized", uri=self.cfg.init, step=ref.step)

    def trainer_state(self) -> dict[str, Any]:
        """What the checkpoint needs beyond weights and optimizer to continue exactly."""
        return {
            "step": self.step,
            "totalSteps": self.cfg.steps,
            "data": self.sampler.state_dict(),
            "tokensSeen": self.step * self.cfg.batch_size * self.cfg.seq_len,
            "seed": self.cfg.seed,
        }

    def save(self) -> checkpoint.CheckpointRef | None:
        """Save collectively (every rank calls this); None without a checkpoint URI."""
        if self.store is None:
            return None
        if self.saved_step == self.step:  # nothing changed since the last save
            return checkpoint.ref_at(self.store, self.step)
        t0 = time.perf_counter()
        ref = checkpoint.save(
            self.store,
            self.step,
            self.raw,
            self.optimizer,
            self.trainer_state(),
            self.arch,
            keep=self.ctx.checkpoint_keep,
        )
        seconds = time.perf_counter() - t0
        self.saved_step = self.step
        self.telemetry.on_checkpoint(ref, seconds)
        self._log("checkpoint", step=ref.step, uri=ref.uri, seconds=round(seconds, 3))
        return ref

    # ------------------------------------------------------------ steps

    def _log(self, event: str, **fields: Any) -> None:
        if self.d.is_main:
            log_event(event, **fields)

    def _autocast(self) -> Any:
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.d.device.type, dtype=self.amp)

    def train_step(self) -> tuple[torch.Tensor, float]:
        """One optimizer step; returns this rank's mean micro-batch loss and the base LR."""
        cfg = self.cfg
        accum = cfg.batch_size // cfg.micro_batch_size
        lr = learning_rate(
            self.step, cfg.schedule, cfg.optimizer.lr, cfg.steps, cfg.batch_size, cfg.seq_len
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        total = torch.zeros((), device=self.d.device)
        for micro in range(accum):
            x, y = self.corpus.train.batch(self.sampler.next_indices(cfg.micro_batch_size))
            x = x.to(self.d.device, non_blocking=True)
            y = y.to(self.d.device, non_blocking=True)
            with distributed.grad_sync(self.model, sync=micro == accum - 1), self._autocast():
                _, loss = self.model(x, y)
                assert loss is not None
                (loss / accum).backward()
            total += loss.detach()
        if cfg.optimizer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw.parameters(), cfg.optimizer.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total / accum, lr

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

    # ------------------------------------------------------------ the loop

    def run(self, on_step: StepCallback | None = None) -> ExitCode:
        """Train to `steps`; the exit code says how the run ended."""
        cfg, ctx = self.cfg, self.ctx
        tokens_per_step = cfg.batch_size * cfg.seq_len
        self._log(
            "start",
            step=self.step,
            totalSteps=cfg.steps,
            worldSize=self.d.world_size,
            params=self.raw.num_params(),
            device=str(self.d.device),
        )
        last_time, last_step = time.perf_counter(), self.step
        while self.step < cfg.steps:
            if distributed.any_rank(self.preempt.requested, self.d):
                return self._preempted()
            loss_t, lr = self.train_step()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                loss = float(distributed.mean(loss_t, self.d).item())
                now = time.perf_counter()
                tps = (self.step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
                last_time, last_step = now, self.step
                util = mfu(tps, self.flops_token, self.peak, self.d.world_size)
                self.telemetry.on_step(
                    self.step, loss, lr, tokens_per_step, tps, util, write_progress=self.d.is_main
                )
                self._log(
                    "step",
                    step=self.step,
                    loss=round(loss, 5),
                    lr=lr,
                    tokensPerSecond=round(tps, 1),
                    mfu=round(util, 4),
                )
                if on_step is not None:
                    on_step(StepRecord(self.step, loss, lr, tps), self.preempt)
            else:
                self.telemetry.tokens_c.inc(tokens_per_step)
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                eval_loss = self.evaluate()
                if eval_loss is not None:
                    self.telemetry.on_eval(eval_loss)
                    self._log("eval", step=self.step, loss=round(eval_loss, 5))
            interval = ctx.checkpoint_interval
            if interval and self.step % interval == 0 and self.step < cfg.steps:
                self.save()
        self.save()
        self._log("done", step=self.step)
        return ExitCode.SUCCEEDED

    def _preempted(self) -> ExitCode:
        """Save collectively, acknowledge through the termination message, exit 75."""
        self._log("preempted", step=self.step)
        ref = self.save()
        if ref is not None and self.d.is_main:
            write_termination_message(ref, self.ctx.termination_log)
        return ExitCode.PREEMPTED

    def close(self) -> None:
        """Stop the metrics server."""
        self.telemetry.close()


def run_pretrain(
    cfg: PretrainConfig, ctx: WorkerContext, on_step: StepCallback | None = None
) -> ExitCode:
    """Run (or resume) a pretraining job; the worker contract's entry point for `pretrain`."""
    check_world_size(cfg, ctx.world_size)
    preempt = PreemptionFlag().install()
    d = distributed.setup(ctx.rank, ctx.world_size, ctx.local_rank)
    trainer: Trainer | None = None
    try:
        trainer = Trainer(cfg, ctx, d, preempt)
        return trainer.run(on_step)
    finally:
        if trainer is not None:
            trainer.close()
        preempt.uninstall()
        distributed.teardown()
