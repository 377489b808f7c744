"""The `finetune` workload: `run_finetune(config, context)` -> ExitCode.

Launch (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/ft torchrun -m carina.workloads

with spec {"kind": "finetune", "config": {"base": "file:///tmp/pretrain", "mode": "ssr"}}.
Rank 0 builds the training set (SSR: the base answers every prompt, the judge decides, the
target is chosen) and saves it as `ssr-dataset.jsonl` under the checkpoint URI; the other ranks
wait in a broadcast (bounded by the process group's 30-minute timeout) and receive it from
rank 0. `config.ssr.engine` says how rank 0 builds it: a plain loop in its own process, or
Ray Data actor pools (`ssr_ray`; `auto` from `rayMinRows` examples on). A restarted job
reads that file back instead of asking the judge again. Then masked SFT in the run loop
every workload shares (`runtime/loop.py`): the usual checkpoints, SIGTERM protocol and
telemetry.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.distributed as dist
from prometheus_client import Gauge

from carina.workloads import metric_names
from carina.workloads.config import ExitCode, FinetuneConfig, FinetuneMode, Parallelism, SSREngine
from carina.workloads.contract import WorkerContext
from carina.workloads.data import ByteTokenizer
from carina.workloads.errors import WorkerError
from carina.workloads.finetune import ssr, ssr_ray
from carina.workloads.finetune.masking import Pair
from carina.workloads.finetune.trainer import PairBatches, make_optimizer, step_lr, train_step
from carina.workloads.judges import build_judge
from carina.workloads.models.generation import generate_answers
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint, distributed
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.flops import sequence_flops
from carina.workloads.runtime.loop import RunLoop, StepCallback, StepReport, Workload, run_workload
from carina.workloads.runtime.precision import autocast_dtype
from carina.workloads.runtime.storage import Store
from carina.workloads.runtime.telemetry import log_event
from carina.workloads.tasks.loaders import load_task_data
from carina.workloads.tasks.types import QAExample

GENERATION_BATCH = 64


def qa_examples(cfg: FinetuneConfig) -> list[QAExample]:
    """The training questions; fine-tuning needs QA data (grounded-qa, squad2 or carina-qa)."""
    data = load_task_data(cfg.data)
    examples = [x for x in data if isinstance(x, QAExample)]
    if not data or len(examples) != len(data):
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            "config.data: finetune needs question-answer data "
            "(generator grounded-qa, or format squad2 or carina-qa)",
        )
    return examples


def build_dataset(
    cfg: FinetuneConfig, model: Transformer, tokenizer: ByteTokenizer
) -> list[ssr.SSRRecord]:
    """The training set of `cfg.mode`: gold targets (sft) or self-rehearsed ones (ssr)."""
    examples = qa_examples(cfg)
    if FinetuneMode(cfg.mode) == FinetuneMode.SFT:
        return ssr.sft_records(examples)
    engine = ssr_ray.choose_engine(cfg.ssr, len(examples), ssr_ray.ray_installed())
    log_event("ssr-engine", engine=str(engine), examples=len(examples))
    if engine == SSREngine.RAY:
        gpus = torch.cuda.device_count() if model.lm_head.weight.is_cuda else 0
        records = ssr_ray.build_records_on_ray(
            examples, cfg.base, cfg.judge, cfg.max_new_tokens, cfg.ssr, gpus
        )
    else:
        records = build_records_plain(cfg, examples, model, tokenizer)
    errors = [r.judge_error for r in records if r.judge_error]
    if errors:
        log_event("judge-errors", count=len(errors), first=errors[0])
    return records


def build_records_plain(
    cfg: FinetuneConfig, examples: list[QAExample], model: Transformer, tokenizer: ByteTokenizer
) -> list[ssr.SSRRecord]:
    """SSR steps 1-3 in this process: generate in batches, then judge every answer."""
    prompts = [ssr.qa_prompt(ex) for ex in examples]
    answers = generate_answers(model, tokenizer, prompts, cfg.max_new_tokens, GENERATION_BATCH)
    verdicts = ssr.judge_answers(build_judge(cfg.judge), examples, answers)
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


class Finetuner(Workload):
    """State of one fine-tuning run on one rank."""

    def __init__(
        self, cfg: FinetuneConfig, ctx: WorkerContext, d: Dist, preempt: PreemptionFlag
    ) -> None:
        if cfg.batch_size % cfg.micro_batch_size or cfg.micro_batch_size % d.world_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                "config.batchSize must be a multiple of microBatchSize, and microBatchSize "
                f"a multiple of WORLD_SIZE ({d.world_size})",
            )
        self.cfg, self.ctx, self.d = cfg, ctx, d
        torch.manual_seed(cfg.seed)
        self.tokenizer = ByteTokenizer()
        self.raw: Transformer = checkpoint.load_pretrained(cfg.base, d.device)
        self.arch = self.raw.arch
        if self.arch.vocab_size != self.tokenizer.vocab_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                "config.base: fine-tuning supports byte-tokenizer models only "
                f"(vocab {self.tokenizer.vocab_size}, the base has {self.arch.vocab_size})",
            )
        self.matmul_params = self.raw.num_params(exclude_embedding=True)
        self.optimizer = make_optimizer(self.raw, cfg.optimizer)
        self.loop = RunLoop(self, ctx, d, preempt, cfg.steps)
        self.acceptance = Gauge(
            metric_names.FINETUNE_SSR_ACCEPTANCE_RATIO,
            "Share of SSR examples trained on the model's own answer",
            metric_names.LABELS,
            registry=self.telemetry.registry,
        ).labels(job=ctx.job, namespace=ctx.namespace, rank=str(d.rank))
        # The dataset comes from the base's own answers: built before any resumed weights load.
        self.records = self._dataset()
        pairs = [Pair(r.prompt, ssr.training_response(r)) for r in self.records]
        self.batches = PairBatches(
            self.tokenizer, pairs, self.arch.max_seq_len, cfg.seed, d.rank, d.world_size
        )
        self.step = 0
        self.loop.resume()
        rate = ssr.acceptance_rate(self.records)
        self.acceptance.set(rate)
        self.loop.log(
            "dataset",
            mode=str(cfg.mode),
            examples=len(self.records),
            acceptanceRatio=round(rate, 4),
        )
        self.model = distributed.wrap(self.raw, Parallelism.DDP, d)
        self.amp = autocast_dtype(cfg.precision, d.device)

    def _dataset(self) -> list[ssr.SSRRecord]:
        records = None
        if self.d.is_main:
            store = self.loop.store
            records = read_dataset(store) if store else None
            if records is None:
                t0 = time.perf_counter()
                records = build_dataset(self.cfg, self.raw, self.tokenizer)
                self.loop.log("ssr-built", seconds=round(time.perf_counter() - t0, 2))
                if store is not None:
                    store.put_bytes(ssr.dumps_jsonl(records), ssr.DATASET_FILE)
        return share(records, self.d)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "totalSteps": self.cfg.steps,
            "mode": str(self.cfg.mode),
            "base": self.cfg.base,
            "acceptanceRatio": ssr.acceptance_rate(self.records),
            "dataset": ssr.DATASET_FILE,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.batches.sampler.consumed = self.step * self.cfg.batch_size

    def start(self) -> None:
        self.raw.train()

    def train_step(self) -> StepReport:
        """One optimizer step over `batchSize` pairs; the loss covers response tokens only."""
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = step_lr(self.step, cfg.schedule, cfg.optimizer.lr, cfg.steps, cfg.batch_size)
        micro = [
            self.batches.next(cfg.micro_batch_size)
            for _ in range(cfg.batch_size // cfg.micro_batch_size)
        ]
        loss = train_step(
            self.model, self.optimizer, micro, lr, cfg.optimizer.grad_clip, self.amp is not None
        )
        self.step += 1
        # This rank's counts stand for every rank's: pairs are drawn alike across ranks.
        world = self.d.world_size
        flops = sum(sequence_flops(self.matmul_params, self.arch, m.lengths) for m in micro)
        return StepReport(
            loss,
            lr,
            tokens=sum(m.trained_tokens for m in micro) * world,
            flops=flops * world,
            fields={"seconds": round(time.perf_counter() - t0, 3)},
        )


def run_finetune(
    cfg: FinetuneConfig, ctx: WorkerContext, on_step: StepCallback | None = None
) -> ExitCode:
    """Run (or resume) a fine-tuning job; the worker contract's entry point for `finetune`."""
    return run_workload(ctx, lambda d, preempt: Finetuner(cfg, ctx, d, preempt), on_step)
