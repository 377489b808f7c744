"""A stand-in worker: honours the worker contract without torch, for fast substrate tests.

Reads RANK/WORLD_SIZE and the CARINA_* variables like `python -m carina.workloads`: trains
`config.steps` "steps" (a sleep each), saves a checkpoint file every interval under a
file:// CARINA_CHECKPOINT_URI, resumes from the newest one, and serves the worker's progress
gauges (`carina_worker_step` ..., `carina_checkpoint_last_step`) on CARINA_METRICS_PORT
(local rank 0 gets the port; the step reads 0 until this attempt's first step). Global rank 0
writes its final word to the termination message when it finishes and on SIGTERM (after a
save; it then exits 75). Every rank prints `step N` per step so tests can count steps
trained twice.
Global rank 0 also exports the step times the platform watches: its median seconds between
steps (`carina_worker_step_seconds`) and every rank's compute seconds per step
(`carina_worker_rank_step_seconds{rank}`, as the real worker's all-gather would give them).
Knobs: STANDIN_STEP_SECONDS (default 0.05), STANDIN_EXIT_AT_STEP + STANDIN_EXIT_CODE (on
global rank STANDIN_EXIT_RANK, default 0, of the first generation); STANDIN_SLOW_RANK +
STANDIN_SLOW_FACTOR (default 3): that rank computes a step in FACTOR x the others' time, and
every rank steps at its pace, as a synchronous gang waits for its slowest rank;
STANDIN_FREEZE_AT_STEP: the first generation stops stepping at that step but keeps serving
/metrics (a frozen progress feed, as a hung collective leaves it); on SIGTERM it exits 75
without saving, as a hung rank cannot.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

stop = False
gauges: dict[str, float] = {}


def _on_term(*_: object) -> None:
    global stop
    stop = True


def _atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


# Per-rank series (rank 0's gathered step times), by rank: served with that rank's label.
rank_seconds: dict[int, float] = {}


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        job = os.environ.get("CARINA_JOB", "")
        labels = f'{{job="{job}",rank="{os.environ["RANK"]}"}}'
        body = "".join(f"{name}{labels} {value}\n" for name, value in dict(gauges).items())
        body += "".join(
            f'carina_worker_rank_step_seconds{{job="{job}",rank="{r}"}} {value}\n'
            for r, value in sorted(dict(rank_seconds).items())
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


def _serve_metrics() -> None:
    port = int(os.environ.get("CARINA_METRICS_PORT") or 0)
    if port <= 0:
        return
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Metrics)
    except OSError as e:  # as the real worker: metrics are advisory
        print(f"standin: metrics port {port}: {e}", file=sys.stderr, flush=True)
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    rank = int(os.environ["RANK"])
    spec = json.loads(Path(os.environ["CARINA_SPEC"]).read_text())
    steps = int(spec["config"].get("steps", 20))
    interval = int(os.environ.get("CARINA_CHECKPOINT_INTERVAL") or 0)
    uri = os.environ.get("CARINA_CHECKPOINT_URI", "")
    ckpt_dir = Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    delay = float(os.environ.get("STANDIN_STEP_SECONDS", "0.05"))
    exit_at = int(os.environ.get("STANDIN_EXIT_AT_STEP", "0"))
    exit_rank = int(os.environ.get("STANDIN_EXIT_RANK", "0"))
    first = os.environ.get("CARINA_RESTART") == "0"
    freeze_at = int(os.environ.get("STANDIN_FREEZE_AT_STEP", "0")) if first else 0
    slow_rank = os.environ.get("STANDIN_SLOW_RANK", "")
    slow_factor = float(os.environ.get("STANDIN_SLOW_FACTOR", "3"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    pace = delay * slow_factor if slow_rank else delay
    intervals: list[float] = []
    done = [int(p.stem.split("-")[1]) for p in ckpt_dir.glob("step-*.json")]
    step = max(done, default=0)
    last_ckpt = {"step": step, "uri": f"{uri}/step-{step:08d}"} if step else None
    gauges.update(
        carina_worker_step=0,
        carina_worker_total_steps=steps,
        carina_checkpoint_last_step=step,
    )
    _serve_metrics()

    def save() -> None:
        nonlocal last_ckpt
        if rank == 0:
            _atomic(ckpt_dir / f"step-{step:08d}.json", {"step": step})
        last_ckpt = {"step": step, "uri": f"{uri}/step-{step:08d}"}
        gauges["carina_checkpoint_last_step"] = step

    def final_word() -> None:
        if rank == 0:
            said = {"progress": {"step": step, "totalSteps": steps, "loss": 5.0 / max(step, 1)}}
            Path(os.environ["CARINA_TERMINATION_LOG"]).write_text(
                json.dumps({**said, "checkpoint": last_ckpt} if last_ckpt else said)
            )

    print(f"resume from {step}", flush=True)
    started = time.monotonic()
    while step < steps:
        if stop:
            save()
            final_word()
            return 75
        if freeze_at and step >= freeze_at:
            print(f"frozen at step {step}", flush=True)
            while not stop:
                time.sleep(0.05)
            final_word()
            return 75
        time.sleep(pace)
        step += 1
        now = time.monotonic()
        intervals[:] = [*intervals[-19:], now - started]
        started = now
        if rank == 0:
            gauges["carina_worker_step_seconds"] = sorted(intervals)[len(intervals) // 2]
            rank_seconds.update(
                {r: delay * (slow_factor if str(r) == slow_rank else 1) for r in range(world)}
            )
        print(f"step {step}", flush=True)
        if (
            exit_at
            and step == exit_at
            and rank == exit_rank
            and os.environ.get("CARINA_RESTART") == "0"
        ):
            return int(os.environ.get("STANDIN_EXIT_CODE", "1"))
        if interval and step % interval == 0:
            save()
        gauges.update(
            carina_worker_step=step,
            carina_worker_loss=5.0 / step,
            carina_worker_tokens_per_second=1e3,
        )
    save()
    final_word()
    return 0


if __name__ == "__main__":
    sys.exit(main())
