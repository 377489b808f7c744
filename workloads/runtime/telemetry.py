"""Worker telemetry: Prometheus metrics, the progress file, log lines, the termination message.

- Metrics (names in `metric_names`) are served on CARINA_METRICS_PORT by every rank (0 = off),
  labelled job, namespace, rank.
- Rank 0 writes the progress file (CARINA_PROGRESS_FILE) that the embedded substrate reads:
  {"step", "totalSteps", "loss", "tokensPerSecond", "updatedAt", "lastCheckpoint"}, and
  "skippedCheckpoints" when a resume passed over damaged checkpoints. A restarted worker
  starts from the step, loss and throughput the file already shows, so they do not drop to
  zero while it loads.
- Rank 0 prints one JSON object per line to stdout for each logged event.
- On preemption rank 0 writes {"checkpoint": {"step", "uri"}} to the termination-message path
  so the operator learns where to resume without the worker holding API credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from carina.workloads import metric_names as names
from carina.workloads.contract import (
    CARINA_TERMINATION_LOG,
    DEFAULT_TERMINATION_LOG,
    ProgressDocument,
    TerminationMessage,
)

if TYPE_CHECKING:  # checkpoint imports log_event from here
    from carina.workloads.runtime.checkpoint import CheckpointRef, SkippedCheckpoint


def utc_now() -> str:
    """RFC 3339 UTC timestamp, second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Replace `path` with `obj` as JSON so a reader never sees a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def log_event(event: str, **fields: Any) -> None:
    """One JSON line on stdout: {"event": ..., ...}."""
    print(json.dumps({"event": event, **fields}), file=sys.stdout, flush=True)


def write_termination_message(ref: CheckpointRef, path: str | None = None) -> bool:
    """Write the checkpoint acknowledgement; False when the path is not writable."""
    target = path or os.environ.get(CARINA_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)
    message = TerminationMessage(checkpoint_step=ref.step, checkpoint_uri=ref.uri)
    try:
        with open(target, "w") as f:
            f.write(message.to_text())
        return True
    except OSError:
        return False  # outside Kubernetes there may be no termination log: not an error


class Telemetry:
    """Metrics and progress of one worker process."""

    def __init__(
        self,
        job: str,
        namespace: str,
        rank: int,
        total_steps: int,
        port: int = 0,
        progress_file: str | None = None,
    ) -> None:
        self.rank = rank
        self.total_steps = total_steps
        self.progress_file = progress_file if rank == 0 else None
        self.registry = CollectorRegistry()
        labels = {"job": job, "namespace": namespace, "rank": str(rank)}

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
        self.save_h = Histogram(
            names.CHECKPOINT_SAVE_SECONDS,
            "Collective checkpoint save time",
            names.LABELS,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        ).labels(**labels)
        self.total_g.set(total_steps)
        self.server: Any = None
        if port > 0:
            try:
                self.server, _ = start_http_server(port, registry=self.registry)
            except OSError as e:  # metrics are advisory: a taken port must not stop training
                print(f"carina worker: metrics port {port}: {e}", file=sys.stderr, flush=True)
        self.last: dict[str, Any] = {"step": 0, "loss": None, "tokensPerSecond": 0.0}
        shown = _read_progress(self.progress_file) if self.progress_file else None
        if shown is not None:
            self.last = {
                "step": shown.step,
                "loss": shown.loss,
                "tokensPerSecond": shown.tokens_per_second,
            }
        self.last_checkpoint: dict[str, Any] | None = None
        self.skipped: list[dict[str, Any]] = []

    def on_step(
        self,
        step: int,
        loss: float,
        lr: float,
        tokens: int,
        tokens_per_second: float,
        mfu: float,
        write_progress: bool = True,
    ) -> None:
        """Record a finished optimizer step (`step` counts completed steps)."""
        self.step_g.set(step)
        self.loss_g.set(loss)
        self.lr_g.set(lr)
        self.tokens_c.inc(tokens)
        self.tps_g.set(tokens_per_second)
        self.mfu_g.set(mfu)
        self.last = {"step": step, "loss": loss, "tokensPerSecond": tokens_per_second}
        if write_progress:
            self.write_progress()

    def on_eval(self, loss: float) -> None:
        """Record a held-out loss."""
        self.eval_g.set(loss)

    def on_checkpoint(self, ref: CheckpointRef, seconds: float) -> None:
        """Record a completed save."""
        self.save_h.observe(seconds)
        self.ckpt_step_g.set(ref.step)
        self.last_checkpoint = {"step": ref.step, "uri": ref.uri, "time": utc_now()}
        self.write_progress()

    def on_resume(self, ref: CheckpointRef) -> None:
        """Record the checkpoint a restarted worker resumed from."""
        self.ckpt_step_g.set(ref.step)
        self.last = {**self.last, "step": ref.step}
        self.last_checkpoint = {"step": ref.step, "uri": ref.uri}
        self.write_progress()

    def on_checkpoint_skipped(self, skipped: SkippedCheckpoint) -> None:
        """Record a damaged checkpoint a resume passed over (the platform warns about it)."""
        self.corrupt_c.inc()
        self.skipped.append(skipped.to_json())
        self.write_progress()

    def write_progress(self) -> None:
        """Rank 0: replace the progress file (when one is configured)."""
        if not self.progress_file:
            return
        doc = ProgressDocument(
            step=int(self.last["step"]),
            total_steps=self.total_steps,
            loss=self.last["loss"],
            tokens_per_second=self.last["tokensPerSecond"],
            updated_at=utc_now(),
            last_checkpoint=self.last_checkpoint,
            skipped_checkpoints=tuple(self.skipped),
        )
        with contextlib.suppress(OSError):  # progress is advisory; training goes on without it
            atomic_write_json(self.progress_file, doc.to_json())

    def close(self) -> None:
        """Stop the metrics server."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def _read_progress(path: str) -> ProgressDocument | None:
    """The progress document a previous attempt left, if any."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return ProgressDocument.from_json(doc) if isinstance(doc, dict) else None
