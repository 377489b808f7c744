"""Time from `carina run` to the first training step on the embedded platform.

Method: `carina run --embedded` on a fresh state folder (a 2-worker tiny pretraining job,
seq 64, 20 steps) is started as a subprocess; this script polls rank 0's log file every
5 ms and notes when (1) the substrate started the worker (the launcher's header line),
(2) the worker reported `start` (Python, torch, rendezvous, data and model are ready:
"model initialisation") and (3) the first `step` line appeared. Platform overhead is
(1), everything the platform does before the training code runs; the aim is under 3 s.
Repeated --runs times; medians reported.

    .venv/bin/python bench/time_to_first_step.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from builders import make_job  # noqa: E402

JOB = make_job("first-step").with_replicas(2).with_quick_pretrain(20)


def one_run(tmp: Path) -> tuple[float, float, float]:
    """Seconds from `carina run` to: worker started, worker initialised, first step."""
    manifest = tmp / "job.yaml"
    manifest.write_text(yaml.safe_dump(dict(JOB)))
    state = tmp / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARINA_")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carina.platform",
            "run",
            str(manifest),
            "--embedded",
            "--state-dir",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    marks: dict[str, float] = {}
    try:
        while "step" not in marks and time.perf_counter() - t0 < 300:
            logs = list(state.glob("jobs/default/*/logs/worker-0.log"))
            if logs:
                text = logs[0].read_text(errors="replace")
                now = time.perf_counter() - t0
                marks.setdefault("spawned", now)
                if '"event": "start"' in text:
                    marks.setdefault("started", now)
                if '"event": "step"' in text:
                    marks.setdefault("step", now)
            time.sleep(0.005)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return marks["spawned"], marks["started"], marks["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="carina-ttfs-") as tmp:
            results.append(one_run(Path(tmp)))
    spawned, started, step = (statistics.median(col) for col in zip(*results, strict=True))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    print(f"runs: {args.runs} (medians; each: " + ", ".join(f"{r[2]:.2f}s" for r in results) + ")")
    print(f"carina run -> worker started (platform overhead)  {spawned:6.2f} s")
    print(f"worker started -> initialised (torch, data, model) {started - spawned:6.2f} s")
    print(f"initialised -> first step                          {step - started:6.2f} s")
    print(f"carina run -> first step                           {step:6.2f} s")


if __name__ == "__main__":
    main()
