"""The `finetune` workload: `run_finetune(config, context)` -> ExitCode.

Launch (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/ft torchrun -m carina.workloads

with spec {"kind": "finetune", "config": {"base": "file:///tmp/pretrain", "mode": "ssr"}}.
Rank 0 builds the training set (SSR: the base answers every prompt, the judge decides, the
target is chosen) and saves it as `ssr-dataset.jsonl` under the checkpoint URI; the other ranks
receive it by broadcast. A restarted job reads that file back instead of asking the judge
again. Then masked SFT with the usual checkpoints, SIGTERM protocol and telemetry.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.distributed as dist
from prometheus_client import Gauge

from carina.workloads import checkpoint, distributed, metric_names
from carina.workloads.config import ExitCode, FinetuneConfig, FinetuneMode, Parallelism
from carina.workloads.data import ByteTokenizer
from carina.workloads.distributed import Dist, PreemptionFlag
from carina.workloads.errors import WorkerError
from carina.workloads.finetune import ssr
from carina.workloads.finetune.generation import generate_answers
from carina.workloads.finetune.masking import IGNORE, Pair
from carina.workloads.finetune.trainer import PairBatches, make_optimizer, step_lr, train_step
from carina.workloads.judges import build_judge
from carina.workloads.model import Transformer
from carina.workloads.storage import Store, open_store
from carina.workloads.tasks.loaders import load_task_data
from carina.workloads.tasks.types import QAExample
from carina.workloads.telemetry import Telemetry, log_event, write_termination_message
from carina.workloads.train import autocast_dtype
from carina.workloads.worker import WorkerContext

GENERATION_BATCH = 64


def qa_examples(cfg: FinetuneConfig) -> list[QAExample]:
    """The training questions; fine-tuning needs QA data (grounded-qa, squad2 or carina-qa)."""
    data = load_task_data(cfg.data)
    if not data or not all(isinstance(x, QAExample) for x in data):
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            "config.data: finetune needs question-answer data "
            "(generator grounded-qa, or format squad2 or carina-qa)",
        )
    return data


def build_dataset(
    cfg: FinetuneConfig, model: Transformer, tokenizer: ByteTokenizer
) -> list[ssr.SSRRecord]:
    """The training set of `cfg.mode`: gold targets (sft) or self-rehearsed ones (ssr)."""
    examples = qa_examples(cfg)
    if FinetuneMode(cfg.mode) == FinetuneMode.SFT:
        return ssr.sft_records(examples)
    prompts = [ssr.qa_prompt(ex) for ex in examples]
    answers = generate_answers(model, tokenizer, prompts, cfg.max_new_tokens, GENERATION_BATCH)
    judge = build_judge(cfg.judge)
    verdicts = ssr.judge_answers(judge, examples, answers)
    errors = [v.error for v in verdicts if v.error]
    if errors:
        log_event("judge-errors", count=len(errors), first=errors[0])
    return ssr.build_records(examples, answers, verdicts)


def read_dataset(store: Store) -> list[ssr.SSRRecord] | None:
    """The dataset a previous attempt of this job saved, if any."""
    raw = store.get_bytes(ssr.DATASET_FILE)
    if raw is None:
        return None
    return [ssr.SSRRecord(**json.loads(line)) for line in raw.decode().splitlines() if line]


def share(records: list[ssr.SSRRecord] | None, d: Dist) -> list[ssr.SSRRecord]:
    """Rank 0's dataset on every rank."""
    if d.distributed:
        box: list[Any] = [records]
        dist.broadcast_object_list(box, src=0)
        records = box[0]
    assert records is not None
    return records


class Finetuner:
    """State of one fine-tuning run on one rank."""

    def __init__(self, cfg: FinetuneConfig, ctx: WorkerContext, d: Dist) -> None:
        if cfg.batch_size % cfg.micro_batch_size or cfg.micro_batch_size % d.world_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                "config.batchSize must be a multiple of microBatchSize, and microBatchSize "
                f"a multiple of WORLD_SIZE ({d.world_size})",
            )
        self.cfg, self.ctx, self.d = cfg, ctx, d
        self.tokenizer = ByteTokenizer()
        self.raw: Transformer = checkpoint.load_pretrained(cfg.base, d.device)
        self.arch = self.raw.arch
        if self.arch.vocab_size != self.tokenizer.vocab_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                "config.base: fine-tuning supports byte-tokenizer models only "
                f"(vocab {self.tokenizer.vocab_size}, the base has {self.arch.vocab_size})",
            )
        self.optimizer = make_optimizer(self.raw, cfg.optimizer)
        self.store = open_store(ctx.checkpoint_uri) if ctx.checkpoint_uri else None
        self.telemetry = Telemetry(
            ctx.job, ctx.namespace, d.rank, cfg.steps, ctx.metrics_port, ctx.progress_file
        )
        self.acceptance = Gauge(
            metric_names.FINETUNE_SSR_ACCEPTANCE_RATIO,
            "Share of SSR examples trained on the model's own answer",
            metric_names.LABELS,
            registry=self.telemetry.registry,
        ).labels(job=ctx.job, namespace=ctx.namespace, rank=str(d.rank))
        # The dataset comes from the base's own answers: built before any resumed weights load.
        self.records = self._dataset()
        self.step = 0
        self.saved_step: int | None = None
        on_skip = self.telemetry.on_checkpoint_skipped
        restored = (
            checkpoint.restore_latest(self.store, self.raw, self.optimizer, on_skip)
            if self.store
            else None
        )
        if restored is not None:
            self.step = self.saved_step = int(restored.manifest["trainer"]["step"])
            self.telemetry.on_resume(restored.ref)
            self._log("resumed", step=self.step, uri=restored.ref.uri)
        rate = ssr.acceptance_rate(self.records)
        self.acceptance.set(rate)
        self._log(
            "dataset",
            mode=str(cfg.mode),
            examples=len(self.records),
            acceptanceRatio=round(rate, 4),
        )
        pairs = [Pair(r.prompt, ssr.training_response(r)) for r in self.records]
        self.batches = PairBatches(
            self.tokenizer, pairs, self.arch.max_seq_len, cfg.seed, d.rank, d.world_size
        )
        self.batches.sampler.consumed = self.step * cfg.batch_size
        self.model = distributed.wrap(self.raw, Parallelism.DDP, d)
        self.amp = autocast_dtype(cfg.precision, d.device)

    def _log(self, event: str, **fields: Any) -> None:
        if self.d.is_main:
            log_event(event, **fields)

    def _dataset(self) -> list[ssr.SSRRecord]:
        records = None
        if self.d.is_main:
            records = read_dataset(self.store) if self.store else None
            if records is None:
                t0 = time.perf_counter()
                records = build_dataset(self.cfg, self.raw, self.tokenizer)
                self._log("ssr-built", seconds=round(time.perf_counter() - t0, 2))
                if self.store is not None:
                    self.store.put_bytes(ssr.dumps_jsonl(records), ssr.DATASET_FILE)
        return share(records, self.d)

    def save(self) -> checkpoint.CheckpointRef | None:
        """Save collectively; None without a checkpoint URI."""
        if self.store is None:
            return None
        if self.saved_step == self.step:
            return checkpoint.ref_at(self.store, self.step)
        t0 = time.perf_counter()
        state = {
            "step": self.step,
            "totalSteps": self.cfg.steps,
            "mode": str(self.cfg.mode),
            "base": self.cfg.base,
            "acceptanceRatio": ssr.acceptance_rate(self.records),
            "dataset": ssr.DATASET_FILE,
        }
        ref = checkpoint.save(
            self.store,
            self.step,
            self.raw,
            self.optimizer,
            state,
            self.arch,
            keep=self.ctx.checkpoint_keep,
        )
        self.saved_step = self.step
        self.telemetry.on_checkpoint(ref, time.perf_counter() - t0)
        self._log("checkpoint", step=ref.step, uri=ref.uri)
        return ref

    def run(self, preempt: PreemptionFlag) -> ExitCode:
        """Train to `steps`; the exit code says how the run ended."""
        cfg = self.cfg
        accumulation = cfg.batch_size // cfg.micro_batch_size

        trained = [0]  # response tokens this rank has trained on (the loss covers only them)

        def micro() -> Any:
            while True:
                inputs, labels = self.batches.next(cfg.micro_batch_size)
                trained[0] += int((labels != IGNORE).sum())
                yield inputs, labels

        it = micro()
        self.raw.train()
        while self.step < cfg.steps:
            if distributed.any_rank(preempt.requested, self.d):
                self._log("preempted", step=self.step)
                ref = self.save()
                if ref is not None and self.d.is_main:
                    write_termination_message(ref, self.ctx.termination_log)
                return ExitCode.PREEMPTED
            t0, before = time.perf_counter(), trained[0]
            lr = step_lr(self.step, cfg.schedule, cfg.optimizer.lr, cfg.steps, cfg.batch_size)
            loss = train_step(
                self.model,
                self.optimizer,
                it,
                accumulation,
                lr,
                cfg.optimizer.grad_clip,
                bf16=self.amp is not None,
            )
            loss = float(distributed.mean(torch.tensor(loss, device=self.d.device), self.d))
            self.step += 1
            seconds = time.perf_counter() - t0
            tokens = (trained[0] - before) * self.d.world_size  # about: ranks' shares are alike
            self.telemetry.on_step(
                self.step,
                loss,
                lr,
                tokens,
                tokens / max(seconds, 1e-9),
                0.0,
                write_progress=self.d.is_main,
            )
            self._log("step", step=self.step, loss=round(loss, 5), lr=lr, seconds=round(seconds, 3))
            interval = self.ctx.checkpoint_interval
            if interval and self.step % interval == 0 and self.step < cfg.steps:
                self.save()
        self.save()
        self._log("done", step=self.step)
        return ExitCode.SUCCEEDED


def run_finetune(cfg: FinetuneConfig, ctx: WorkerContext) -> ExitCode:
    """Run (or resume) a fine-tuning job; the worker contract's entry point for `finetune`."""
    preempt = PreemptionFlag().install()
    d = distributed.setup(ctx.rank, ctx.world_size, ctx.local_rank)
    tuner: Finetuner | None = None
    try:
        torch.manual_seed(cfg.seed)
        tuner = Finetuner(cfg, ctx, d)
        return tuner.run(preempt)
    finally:
        if tuner is not None:
            tuner.telemetry.close()
        preempt.uninstall()
        distributed.teardown()
