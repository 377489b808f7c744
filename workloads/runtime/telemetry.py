"""Worker telemetry: Prometheus metrics, log lines, the termination message.

- Metrics (names in `metric_names`) are served on CARINA_METRICS_PORT by local rank 0 (0 = off),
  labelled job, namespace, rank. Global rank 0's endpoint is the one channel of live progress:
  the operator and the embedded substrate both scrape it for the step, total steps, loss,
  tokens per second and the newest checkpoint's step, and for `carina_checkpoint_damaged`,
  one series per damaged checkpoint this attempt's resume passed over (for the whole attempt,
  so a scrape every few seconds cannot miss it), from which the platform raises its
  CheckpointCorrupt Warning. A restarted worker exports step 0 until its first logged step;
  the job's status keeps the last known progress meanwhile. Global rank 0 also exports its
  median step time (the platform's yardstick for a stalled step) and every rank's median
  compute time per step, one series per rank (`step_times.py`; the platform names the
  outliers stragglers), and the stage being trained of a staged run (its name as a label, its
  1-based index as the value, and the stage count), which becomes `status.progress.stage`.
- Rank 0 prints one JSON object per line to stdout for each logged event.
- Rank 0's final word goes to the termination-message path on success and on preemption: its
  last step, total steps and loss, and its newest checkpoint. The endpoint is gone once the
  worker exits, so this is how the platform learns where the run ended (and where to resume)
  without the worker holding API credentials.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from carina.workloads import metric_names as names
from carina.workloads.contract import (
    CARINA_TERMINATION_LOG,
    DEFAULT_TERMINATION_LOG,
    TerminationMessage,
)
from carina.workloads.runtime.checkpoint_refs import CheckpointRef, SkippedCheckpoint


def log_event(event: str, **fields: Any) -> None:
    """One JSON line on stdout: {"event": ..., ...}."""
    print(json.dumps({"event": event, **fields}), file=sys.stdout, flush=True)


def write_termination_message(message: TerminationMessage, path: str | None = None) -> bool:
    """Write rank 0's final word; False when the path is not writable."""
    target = path or os.environ.get(CARINA_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)
    try:
        with open(target, "w") as f:
            f.write(message.to_text())
        return True
    except OSError:
        return False  # outside Kubernetes there may be no termination log: not an error


class Telemetry:
    """Metrics and progress of one worker process."""

    def __init__(
        self, job: str, namespace: str, rank: int, total_steps: int, port: int = 0
    ) -> None:
        self.rank = rank
        self.total_steps = total_steps
        self.registry = CollectorRegistry()
        labels = {"job": job, "namespace": namespace, "rank": str(rank)}
        self.labels = labels

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, names.LABELS, registry=self.registry).labels(**labels)

        self.step_g = gauge(names.WORKER_STEP, "Optimizer steps completed")
        self.total_g = gauge(names.WORKER_TOTAL_STEPS, "Optimizer steps of the whole run")
        self.loss_g = gauge(names.WORKER_LOSS, "Training loss of the last step")
        self.eval_g = gauge(names.WORKER_EVAL_LOSS, "Last held-out loss")
        self.lr_g = gauge(names.WORKER_LEARNING_RATE, "Base learning rate of the last step")
        self.tps_g = gauge(names.WORKER_TOKENS_PER_SECOND, "Tokens per second, all ranks")
        self.mfu_g = gauge(names.WORKER_MFU, "Model FLOPs utilization (0-1; NaN: unknown)")
        self.ckpt_step_g = gauge(names.CHECKPOINT_LAST_STEP, "Step of the newest checkpoint")
        self.step_seconds_g = gauge(
            names.WORKER_STEP_SECONDS, "Median seconds between recent step starts"
        )
        self.rank_seconds_g = Gauge(
            names.WORKER_RANK_STEP_SECONDS,
            "Each rank's median compute seconds per step (rank: the rank measured)",
            names.LABELS,
            registry=self.registry,
        )
        self.tokens_c = Counter(
            names.WORKER_TOKENS_TOTAL,
            "Tokens trained on, all ranks",
            names.LABELS,
            registry=self.registry,
        ).labels(**labels)
        self.corrupt_c = Counter(
            names.CHECKPOINT_CORRUPT_TOTAL,
            "Damaged checkpoints a resume passed over",
            names.LABELS,
            registry=self.registry,
        ).labels(**labels)
        self.damaged_g = Gauge(
            names.CHECKPOINT_DAMAGED,
            "1 for each damaged checkpoint this attempt's resume passed over",
            names.DAMAGED_LABELS,
            registry=self.registry,
        )
        self.save_h = Histogram(
            names.CHECKPOINT_SAVE_SECONDS,
            "Collective checkpoint save time",
            names.LABELS,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        ).labels(**labels)
        self.stage_g = Gauge(
            names.WORKER_STAGE,
            "The stage being trained, 1-based (stage: its name)",
            names.STAGE_LABELS,
            registry=self.registry,
        )
        self.stages_g = gauge(names.WORKER_STAGES, "Stages of the whole run")
        self.total_g.set(total_steps)
        self.server: Any = None
        if port > 0:
            try:
                self.server, _ = start_http_server(port, registry=self.registry)
            except OSError as e:  # metrics are advisory: a taken port must not stop training
                print(f"carina worker: metrics port {port}: {e}", file=sys.stderr, flush=True)
        self.last_loss: float | None = None
        self.last_checkpoint: CheckpointRef | None = None

    def on_step(
        self,
        step: int,
        loss: float,
        lr: float,
        tokens: int,
        tokens_per_second: float,
        mfu: float,
    ) -> None:
        """Record a finished optimizer step (`step` counts completed steps)."""
        self.step_g.set(step)
        self.loss_g.set(loss)
        self.lr_g.set(lr)
        self.tokens_c.inc(tokens)
        self.tps_g.set(tokens_per_second)
        self.mfu_g.set(mfu)
        self.last_loss = loss

    def on_stage(self, index: int, name: str, count: int) -> None:
        """Record the stage being trained (`index` 0-based) of `count`; one series at a time."""
        self.stage_g.clear()
        self.stage_g.labels(**self.labels, stage=name).set(index + 1)
        self.stages_g.set(count)

    def on_step_seconds(self, seconds: float) -> None:
        """Record the median time between recent step starts."""
        self.step_seconds_g.set(seconds)

    def on_rank_seconds(self, seconds: list[float]) -> None:
        """Record every rank's median compute seconds per step (global rank 0), by rank."""
        for rank, value in enumerate(seconds):
            if value > 0:
                self.rank_seconds_g.labels(
                    job=self.labels["job"], namespace=self.labels["namespace"], rank=str(rank)
                ).set(value)

    def on_eval(self, loss: float) -> None:
        """Record a held-out loss."""
        self.eval_g.set(loss)

    def on_checkpoint(self, ref: CheckpointRef, seconds: float) -> None:
        """Record a completed save."""
        self.save_h.observe(seconds)
        self.ckpt_step_g.set(ref.step)
        self.last_checkpoint = ref

    def on_resume(self, ref: CheckpointRef) -> None:
        """Record the checkpoint a restarted worker resumed from.

        The step gauge stays 0 until this attempt's first logged step: the platform keeps
        showing the last progress it knows meanwhile.
        """
        self.ckpt_step_g.set(ref.step)
        self.last_checkpoint = ref

    def on_checkpoint_skipped(self, skipped: SkippedCheckpoint) -> None:
        """Record a damaged checkpoint a resume passed over (the platform warns about it).

        Its series stays for the attempt, also once a save at its step has replaced it: the
        platform knows that from the checkpoint gauge (a newer or equal step).
        """
        self.corrupt_c.inc()
        self.damaged_g.labels(
            **self.labels,
            step=str(skipped.step),
            uri=skipped.uri,
            file=skipped.file,
            reason=skipped.reason,
        ).set(1)

    def final_word(self, step: int, ref: CheckpointRef | None = None) -> TerminationMessage:
        """Rank 0's termination message: where the run got to and its newest checkpoint."""
        ref = ref or self.last_checkpoint
        return TerminationMessage(
            step=step,
            total_steps=self.total_steps,
            loss=self.last_loss,
            checkpoint_step=ref.step if ref is not None else None,
            checkpoint_uri=ref.uri if ref is not None else None,
        )

    def close(self) -> None:
        """Stop the metrics server."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
