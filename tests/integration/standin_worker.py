"""A stand-in worker: honours the worker contract without torch, for fast substrate tests.

Reads RANK/WORLD_SIZE and the CARINA_* variables like `python -m carina.workloads`: trains
`config.steps` "steps" (a sleep each), saves a checkpoint file every interval under a
file:// CARINA_CHECKPOINT_URI, resumes from the newest one, writes the progress file on
rank 0, and on SIGTERM saves, writes the termination message and exits 75. Every rank
prints `step N` per step so tests can count steps trained twice.
Knobs: STANDIN_STEP_SECONDS (default 0.05), STANDIN_EXIT_AT_STEP + STANDIN_EXIT_CODE (on
global rank STANDIN_EXIT_RANK, default 0, of the first generation).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

stop = False


def _on_term(*_: object) -> None:
    global stop
    stop = True


def _atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    rank = int(os.environ["RANK"])
    spec = json.loads(Path(os.environ["CARINA_SPEC"]).read_text())
    steps = int(spec["config"].get("steps", 20))
    interval = int(os.environ.get("CARINA_CHECKPOINT_INTERVAL") or 0)
    uri = os.environ.get("CARINA_CHECKPOINT_URI", "")
    ckpt_dir = Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    progress = os.environ.get("CARINA_PROGRESS_FILE")
    delay = float(os.environ.get("STANDIN_STEP_SECONDS", "0.05"))
    exit_at = int(os.environ.get("STANDIN_EXIT_AT_STEP", "0"))
    exit_rank = int(os.environ.get("STANDIN_EXIT_RANK", "0"))
    done = [int(p.stem.split("-")[1]) for p in ckpt_dir.glob("step-*.json")]
    step = max(done, default=0)
    last_ckpt = {"step": step, "uri": f"{uri}/step-{step:08d}"} if step else None

    def save() -> None:
        nonlocal last_ckpt
        if rank == 0:
            _atomic(ckpt_dir / f"step-{step:08d}.json", {"step": step})
        last_ckpt = {"step": step, "uri": f"{uri}/step-{step:08d}"}

    print(f"resume from {step}", flush=True)
    while step < steps:
        if stop:
            save()
            if rank == 0:
                Path(os.environ["CARINA_TERMINATION_LOG"]).write_text(
                    json.dumps({"checkpoint": last_ckpt})
                )
            return 75
        time.sleep(delay)
        step += 1
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
        if rank == 0 and progress:
            _atomic(
                Path(progress),
                {
                    "step": step,
                    "totalSteps": steps,
                    "loss": 5.0 / step,
                    "tokensPerSecond": 1000.0,
                    "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "lastCheckpoint": last_ckpt,
                },
            )
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
