"""The `quantize` workload: `run_quantize(config, context)` -> ExitCode.

Launch like every workload (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/w4a4 python -m carina.workloads

with spec {"kind": "quantize", "config": {"base": "file:///tmp/base", "method": "qat-kurtosis"}}.

1. Load the base checkpoint, put an activation quantizer on every block's linear layer, and set
   its clip values to the MSE-best range of calibration inputs (`calibrationBatches` batches).
2. `qat` / `qat-kurtosis`: fine-tune `steps` steps with fake-quantized inputs and learned clip
   values (plus λ·Kurt of the layers' outputs for `qat-kurtosis`); checkpoints
   (`step-N/`, the usual format plus the clip values) make it resumable, SIGTERM saves and exits
   75. `ptq`: no training; the calibrated clip values are the activation quantization.
3. Weight PTQ (`weightPtq`: rtn or gptq) with `groupSize`.
4. Perplexity at W16A16, W{b}A16 and W{b}A{a} on `evalBatches` held-out batches, activation
   statistics per layer; the quantized checkpoint and report go to `<checkpoint URI>/quantized/`.

The quantized checkpoint's manifest is written last; a restart that finds it exits 0 at once.
One worker only: QAT of a small model does not need data parallelism, and GPTQ's block-wise
calibration is sequential.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from carina.workloads import checkpoint, distributed
from carina.workloads.config import ExitCode, QuantizeConfig, QuantizeMethod
from carina.workloads.data import ShardedSampler, build_corpus
from carina.workloads.distributed import Dist, PreemptionFlag
from carina.workloads.errors import WorkerError
from carina.workloads.model import Transformer
from carina.workloads.quantize import packed
from carina.workloads.quantize.kurtosis import OutputKurtosis
from carina.workloads.quantize.layers import attach_quantizers, calibrate_clip_values, set_precision
from carina.workloads.quantize.metrics import QuantizeMetrics
from carina.workloads.quantize.ptq import quantize_model_weights
from carina.workloads.quantize.qat import build_optimizer, qat_step
from carina.workloads.quantize.report import build_report, evaluate_precisions, render_markdown
from carina.workloads.schedules import learning_rate
from carina.workloads.storage import Store, open_store
from carina.workloads.telemetry import Telemetry, log_event, write_termination_message
from carina.workloads.worker import WorkerContext

# Per-layer statistics cost a device sync per layer: record them every this many steps.
STATS_EVERY = 10


class QuantizeJob:
    """State of one quantize run."""

    def __init__(
        self,
        cfg: QuantizeConfig,
        ctx: WorkerContext,
        d: Dist,
        store: Store,
        preempt: PreemptionFlag,
    ) -> None:
        self.cfg, self.ctx, self.d, self.store, self.preempt = cfg, ctx, d, store, preempt
        torch.manual_seed(cfg.seed)
        model = checkpoint.load_pretrained(cfg.base, d.device)
        assert isinstance(model, Transformer)
        self.model, self.arch = model, model.arch
        if cfg.seq_len > self.arch.max_seq_len:
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                f"config.seqLen ({cfg.seq_len}) exceeds the base model's maxSeqLen "
                f"({self.arch.max_seq_len})",
            )
        self.corpus = build_corpus(cfg.data, cfg.seq_len, cfg.seed)
        if self.corpus.tokenizer.vocab_size > self.arch.vocab_size:
            raise WorkerError(
                ExitCode.BAD_CONFIG, "config.data.tokenizer has more tokens than the base model"
            )
        self.layers = attach_quantizers(model, cfg.activation_bits)
        self.qat_steps = 0 if QuantizeMethod(cfg.method) == QuantizeMethod.PTQ else cfg.steps
        self.kurtosis_lambda = (
            cfg.kurtosis_lambda
            if QuantizeMethod(cfg.method) == QuantizeMethod.QAT_KURTOSIS
            else 0.0
        )
        self.optimizer = build_optimizer(model, cfg.optimizer, cfg.clip_lr)
        self.sampler = ShardedSampler(len(self.corpus.train), cfg.seed, 0, 1)
        self.step = 0
        self.saved_step: int | None = None
        self.telemetry = Telemetry(
            ctx.job, ctx.namespace, d.rank, self.qat_steps, ctx.metrics_port, ctx.progress_file
        )
        self.metrics = QuantizeMetrics(self.telemetry, ctx)

    # ------------------------------------------------------------ data

    def calibration_batches(self) -> list[torch.Tensor]:
        """Fixed training batches (their own sampler seed): clip ranges and GPTQ Hessians."""
        sampler = ShardedSampler(len(self.corpus.train), self.cfg.seed + 1, 0, 1)
        return [
            self.corpus.train.batch(sampler.next_indices(self.cfg.batch_size))[0].to(self.d.device)
            for _ in range(self.cfg.calibration_batches)
        ]

    # ------------------------------------------------------------ QAT state

    def _restore(self) -> bool:
        """Resume QAT from the newest intact step checkpoint; False when there is none."""
        on_skip = self.telemetry.on_checkpoint_skipped
        restored = checkpoint.restore_latest(self.store, self.model, self.optimizer, on_skip)
        if restored is None:
            return False
        ref, manifest = restored.ref, restored.manifest
        self.step = self.saved_step = int(manifest["trainer"]["step"])
        self.sampler.load_state_dict(manifest["trainer"]["data"])
        self.telemetry.last_checkpoint = {"step": ref.step, "uri": ref.uri}
        log_event("resumed", step=self.step, uri=ref.uri, restart=self.ctx.restart)
        return True

    def save(self) -> checkpoint.CheckpointRef | None:
        """A step checkpoint of the QAT state (weights, clip values, optimizer, data position)."""
        if self.saved_step == self.step:
            return checkpoint.ref_at(self.store, self.step)
        t0 = time.perf_counter()
        state = {
            "step": self.step,
            "totalSteps": self.qat_steps,
            "data": self.sampler.state_dict(),
            "seed": self.cfg.seed,
        }
        ref = checkpoint.save(
            self.store,
            self.step,
            self.model,
            self.optimizer,
            state,
            self.arch,
            keep=self.ctx.checkpoint_keep,
        )
        self.saved_step = self.step
        seconds = time.perf_counter() - t0
        self.telemetry.on_checkpoint(ref, seconds)
        log_event("checkpoint", step=ref.step, uri=ref.uri, seconds=round(seconds, 3))
        return ref

    # ------------------------------------------------------------ phases

    def train(self) -> ExitCode | None:
        """QAT to `steps`; PREEMPTED when SIGTERM arrived (after saving), else None."""
        cfg = self.cfg
        set_precision(self.model, quantize_weights=False, quantize_activations=True)
        hooks = OutputKurtosis(self.layers)
        self.model.train()
        tokens = cfg.batch_size * cfg.seq_len
        while self.step < self.qat_steps:
            if self.preempt.requested:
                log_event("preempted", step=self.step)
                ref = self.save()
                if ref is not None:
                    write_termination_message(ref, self.ctx.termination_log)
                return ExitCode.PREEMPTED
            t0 = time.perf_counter()
            x, y = self.corpus.train.batch(self.sampler.next_indices(cfg.batch_size))
            lr = learning_rate(
                self.step,
                cfg.schedule,
                cfg.optimizer.lr,
                self.qat_steps,
                cfg.batch_size,
                cfg.seq_len,
            )
            hooks.record = (self.step + 1) % STATS_EVERY == 0 or self.step + 1 == self.qat_steps
            result = qat_step(
                self.model,
                self.optimizer,
                x.to(self.d.device),
                y.to(self.d.device),
                self.kurtosis_lambda,
                cfg.optimizer.grad_clip,
                lr,
                hooks,
            )
            self.step += 1
            tps = tokens / max(time.perf_counter() - t0, 1e-9)
            self.telemetry.on_step(self.step, result.loss, lr, tokens, tps, 0.0)
            log_event(
                "step",
                step=self.step,
                loss=round(result.loss, 5),
                ce=round(result.ce, 5),
                kurtosis=round(result.kurtosis, 3),
                lr=lr,
                tokensPerSecond=round(tps, 1),
            )
            if hooks.record:
                self.metrics.on_layers(hooks.recorded)
            interval = self.ctx.checkpoint_interval
            if interval and self.step % interval == 0 and self.step < self.qat_steps:
                self.save()
        if self.qat_steps:
            self.save()
        return None

    def finish(self, calibration: list[torch.Tensor]) -> str:
        """Weight PTQ, evaluation, quantized checkpoint and report; returns the checkpoint URI."""
        cfg = self.cfg
        t0 = time.perf_counter()
        qweights = quantize_model_weights(
            self.model,
            cfg.weight_ptq,
            cfg.weight_bits,
            cfg.group_size,
            calibration,
            quantize_activations=cfg.activation_bits < 16,
        )
        log_event(
            "weights-quantized",
            method=cfg.weight_ptq,
            layers=len(qweights),
            seconds=round(time.perf_counter() - t0, 3),
        )
        windows = self.corpus.val if len(self.corpus.val) else self.corpus.train
        ppl, layer_stats, eval_tokens = evaluate_precisions(
            self.model,
            windows,
            cfg.eval_batches * cfg.batch_size,
            cfg.batch_size,
            self.d.device,
            cfg.weight_bits,
            cfg.activation_bits,
        )
        meta: dict[str, Any] = {
            "method": str(cfg.method),
            "base": cfg.base,
            "weightBits": cfg.weight_bits,
            "activationBits": cfg.activation_bits,
            "groupSize": cfg.group_size,
            "weightPtq": cfg.weight_ptq,
            "qatSteps": self.qat_steps,
            "kurtosisLambda": self.kurtosis_lambda,
        }
        report = build_report(ppl, layer_stats, meta, eval_tokens)
        if not len(self.corpus.val):
            report["evalSplit"] = "train"  # no held-out documents (data.valFraction 0)
        self.metrics.on_layers(layer_stats)
        self.metrics.on_perplexity(ppl)
        clips = {
            n: (m.act_quant.lower.item(), m.act_quant.upper.item()) for n, m in self.layers.items()
        }
        self.store.put_bytes(
            json.dumps(report, indent=1).encode(), f"{packed.DIRECTORY}/report.json"
        )
        self.store.put_bytes(render_markdown(report).encode(), f"{packed.DIRECTORY}/report.md")
        # The manifest (written last inside save_quantized) marks the whole result complete.
        uri = packed.save_quantized(self.store, self.model, self.arch, qweights, clips, meta)
        log_event(
            "quantized",
            uri=uri,
            perplexity={k: round(v, 4) for k, v in ppl.items()},
            meanInputKurtosis=round(report["meanActivationKurtosis"]["input"], 3),
        )
        return uri

    def run(self) -> ExitCode:
        """The whole workload (module docstring); resumable at any point."""
        log_event(
            "start",
            method=str(self.cfg.method),
            base=self.cfg.base,
            qatSteps=self.qat_steps,
            params=self.model.num_params(),
            device=str(self.d.device),
        )
        calibration = self.calibration_batches()
        if not self._restore():
            calibrate_clip_values(self.model, calibration)
            log_event("calibrated", layers=len(self.layers), batches=len(calibration))
        exit_code = self.train()
        if exit_code is not None:
            return exit_code
        self.finish(calibration)
        self.telemetry.write_progress()
        log_event("done", step=self.step)
        return ExitCode.SUCCEEDED

    def close(self) -> None:
        self.telemetry.close()


def run_quantize(cfg: QuantizeConfig, ctx: WorkerContext) -> ExitCode:
    """Run (or resume) a quantize job; the worker contract's entry point for `quantize`."""
    if ctx.world_size > 1:
        raise WorkerError(ExitCode.BAD_CONFIG, "quantize runs on one worker: set replicas to 1")
    if not ctx.checkpoint_uri:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            "quantize writes its result under the checkpoint URI: set spec.checkpoint.uri",
        )
    store = open_store(ctx.checkpoint_uri)
    done = packed.read_manifest(store)
    if done is not None:
        log_event(
            "done",
            uri=ctx.checkpoint_uri.rstrip("/") + "/" + packed.DIRECTORY,
            alreadyComplete=True,
        )
        return ExitCode.SUCCEEDED
    preempt = PreemptionFlag().install()
    d = distributed.setup(ctx.rank, ctx.world_size, ctx.local_rank)
    job: QuantizeJob | None = None
    try:
        job = QuantizeJob(cfg, ctx, d, store, preempt)
        return job.run()
    finally:
        if job is not None:
            job.close()
        preempt.uninstall()
        distributed.teardown()
