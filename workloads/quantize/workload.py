"""The `quantize` workload: `run_quantize(config, context)` -> ExitCode.

Launch like every workload (see worker.py for the whole environment):

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/w4a4 python -m carina.workloads

with spec {"kind": "quantize", "config": {"base": "file:///tmp/base", "method": "qat-kurtosis"}}.

1. Load the base checkpoint, put an activation quantizer on every block's linear layer, and set
   its clip values to the MSE-best range of calibration inputs (`calibrationBatches` batches).
2. `qat` / `qat-kurtosis`: fine-tune `steps` steps with fake-quantized inputs and learned clip
   values (plus λ·Kurt of the layers' outputs for `qat-kurtosis`), in the run loop every
   workload shares (`runtime/loop.py`): checkpoints (`step-N/`, the usual format plus the clip
   values) make it resumable, SIGTERM saves and exits 75. `ptq`: no training; the calibrated
   clip values are the activation quantization.
3. Weight PTQ (`weightPtq`: rtn or gptq) with `groupSize`.
4. Perplexity at W16A16, W{b}A16 and W{b}A{a} on `evalBatches` held-out batches, and the base
   checkpoint's own W16A16 on the same batches (the paper's reference; after QAT the run's
   W16A16 is no longer the base model), activation statistics per layer; the quantized
   checkpoint and report go to `<checkpoint URI>/quantized/` (`runtime/packed.py`), and the
   termination message names `<checkpoint URI>/quantized` as the run's final checkpoint, so
   `job://<this job>` resolves to the quantized model (the `evaluate` workload reads it).

A base pretrained with `qat` at the same activation bits keeps its learned clip values; any
other base gets them calibrated.

The quantized checkpoint's manifest is written last; a restart that finds it exits 0 at once,
with the same final word.
One worker only: QAT of a small model does not need data parallelism, and GPTQ's block-wise
calibration is sequential.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from carina.workloads.config import ExitCode, QuantizeConfig, QuantizeMethod
from carina.workloads.contract import TerminationMessage, WorkerContext
from carina.workloads.data import ShardedSampler, Windows, build_corpus
from carina.workloads.errors import WorkerError
from carina.workloads.models.kurtosis import OutputKurtosis
from carina.workloads.models.quant_layers import (
    attach_quantizers,
    calibrate_clip_values,
    set_precision,
)
from carina.workloads.models.transformer import Transformer
from carina.workloads.quantize.metrics import QuantizeMetrics
from carina.workloads.quantize.ptq import quantize_model_weights
from carina.workloads.quantize.qat import build_optimizer, qat_step
from carina.workloads.quantize.report import (
    build_report,
    evaluate_precisions,
    perplexity,
    render_markdown,
)
from carina.workloads.runtime import checkpoint, packed
from carina.workloads.runtime.checkpoint_refs import CheckpointRef
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.flops import flops_per_token
from carina.workloads.runtime.loop import RunLoop, StepReport, Workload, run_workload
from carina.workloads.runtime.schedules import learning_rate
from carina.workloads.runtime.storage import Store, open_store
from carina.workloads.runtime.telemetry import log_event, write_termination_message

# Per-layer statistics cost a device sync per layer: record them every this many steps.
STATS_EVERY = 10


class QuantizeJob(Workload):
    """State of one quantize run."""

    def __init__(
        self, cfg: QuantizeConfig, ctx: WorkerContext, d: Dist, preempt: PreemptionFlag
    ) -> None:
        self.cfg, self.ctx, self.d = cfg, ctx, d
        torch.manual_seed(cfg.seed)
        model = checkpoint.load_pretrained(cfg.base, d.device)
        assert isinstance(model, Transformer)
        self.raw: Transformer = model
        self.arch = model.arch
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
        # The model's FLOPs, counted before the clip values join its parameters.
        self.flops_token = flops_per_token(
            model.num_params(exclude_embedding=True), self.arch, cfg.seq_len
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
        self.loop = RunLoop(self, ctx, d, preempt, self.qat_steps)
        self.metrics = QuantizeMetrics(self.telemetry, ctx)
        self.hooks = OutputKurtosis(self.layers)
        self.calibration: list[torch.Tensor] = []

    @property
    def store(self) -> Store:
        """The checkpoint URI's store: QAT checkpoints, and the result under `quantized/`."""
        store = self.loop.store
        assert store is not None, "run_quantize requires a checkpoint URI"
        return store

    # ------------------------------------------------------------ data

    def calibration_batches(self) -> list[torch.Tensor]:
        """Fixed training batches (their own sampler seed): clip ranges and GPTQ Hessians."""
        sampler = ShardedSampler(len(self.corpus.train), self.cfg.seed + 1, 0, 1)
        return [
            self.corpus.train.batch(sampler.next_indices(self.cfg.batch_size))[0].to(self.d.device)
            for _ in range(self.cfg.calibration_batches)
        ]

    # ------------------------------------------------------------ QAT state

    def state_dict(self) -> dict[str, Any]:
        """The QAT position (weights, clip values and optimizer are the checkpoint's own)."""
        return {
            "step": self.step,
            "totalSteps": self.qat_steps,
            "data": self.sampler.state_dict(),
            "seed": self.cfg.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["data"])

    # ------------------------------------------------------------ phases

    def start(self) -> None:
        """Calibrate the clip values, or resume QAT from its newest intact checkpoint."""
        self.loop.log(
            "start",
            method=str(self.cfg.method),
            base=self.cfg.base,
            qatSteps=self.qat_steps,
            params=self.raw.num_params(),
            device=str(self.d.device),
        )
        self.calibration = self.calibration_batches()
        if self.loop.resume() is None:
            if self.arch.activation_bits == self.cfg.activation_bits:
                self.loop.log("clip-values-from-base", layers=len(self.layers))
            else:
                calibrate_clip_values(self.raw, self.calibration)
                self.loop.log("calibrated", layers=len(self.layers), batches=len(self.calibration))
        set_precision(self.raw, quantize_weights=False, quantize_activations=True)
        self.raw.train()

    def train_step(self) -> StepReport:
        """One QAT step on `batchSize` windows: CE (+ λ·Kurt), fake-quantized activations."""
        cfg = self.cfg
        x, y = self.corpus.train.batch(self.sampler.next_indices(cfg.batch_size))
        lr = learning_rate(
            self.step, cfg.schedule, cfg.optimizer.lr, self.qat_steps, cfg.batch_size, cfg.seq_len
        )
        hooks = self.hooks
        hooks.record = (self.step + 1) % STATS_EVERY == 0 or self.step + 1 == self.qat_steps
        result = qat_step(
            self.raw,
            self.optimizer,
            x.to(self.d.device),
            y.to(self.d.device),
            self.kurtosis_lambda,
            cfg.optimizer.grad_clip,
            lr,
            hooks,
        )
        self.step += 1
        if hooks.record:
            self.metrics.on_layers(hooks.recorded)
        tokens = cfg.batch_size * cfg.seq_len
        fields = {"ce": round(result.ce, 5), "kurtosis": round(result.kurtosis, 3)}
        return StepReport(result.loss, lr, tokens, tokens * self.flops_token, fields)

    def finish(self) -> CheckpointRef:
        """Weight PTQ, evaluation, the quantized checkpoint and its report; the quantized
        checkpoint is the run's final checkpoint (at the QAT step it was made from)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        qweights = quantize_model_weights(
            self.raw,
            cfg.weight_ptq,
            cfg.weight_bits,
            cfg.group_size,
            self.calibration,
            quantize_activations=cfg.activation_bits < 16,
        )
        self.loop.log(
            "weights-quantized",
            method=cfg.weight_ptq,
            layers=len(qweights),
            seconds=round(time.perf_counter() - t0, 3),
        )
        windows = self.corpus.val if len(self.corpus.val) else self.corpus.train
        ppl, layer_stats, eval_tokens = evaluate_precisions(
            self.raw,
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
        report = build_report(ppl, layer_stats, meta, eval_tokens, self.base_perplexity(windows))
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
        uri = packed.save_quantized(self.store, self.raw, self.arch, qweights, clips, meta)
        self.loop.log(
            "quantized",
            uri=uri,
            perplexity={k: round(v, 4) for k, v in ppl.items()},
            meanInputKurtosis=round(report["meanActivationKurtosis"]["input"], 3),
        )
        return CheckpointRef(self.step, uri)

    def base_perplexity(self, windows: Windows) -> float | None:
        """The base checkpoint's W16A16 on the evaluation windows (None: no QAT step ran, so
        the run's own W16A16 is the base's)."""
        if self.qat_steps == 0:
            return None
        cfg = self.cfg
        base = checkpoint.load_pretrained(cfg.base, self.d.device)
        set_precision(base, quantize_weights=False, quantize_activations=False)
        ppl, _ = perplexity(
            base, windows, cfg.eval_batches * cfg.batch_size, cfg.batch_size, self.d.device
        )
        return ppl


def run_quantize(cfg: QuantizeConfig, ctx: WorkerContext) -> ExitCode:
    """Run (or resume) a quantize job; the worker contract's entry point for `quantize`."""
    if ctx.world_size > 1:
        raise WorkerError(ExitCode.BAD_CONFIG, "quantize runs on one worker: set replicas to 1")
    if not ctx.checkpoint_uri:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            "quantize writes its result under the checkpoint URI: set spec.checkpoint.uri",
        )
    manifest = packed.read_manifest(open_store(ctx.checkpoint_uri))
    if manifest is not None:
        # A restart after the result was written: the same final word as the run that wrote it.
        uri = ctx.checkpoint_uri.rstrip("/") + "/" + packed.DIRECTORY
        steps = int(manifest.get("qatSteps", 0))
        write_termination_message(
            TerminationMessage(
                checkpoint_step=steps, checkpoint_uri=uri, step=steps, total_steps=steps
            ),
            ctx.termination_log,
        )
        log_event("done", uri=uri, alreadyComplete=True)
        return ExitCode.SUCCEEDED
    return run_workload(ctx, lambda d, preempt: QuantizeJob(cfg, ctx, d, preempt))
