"""World size 4 as 2 workers x 2 ranks against 4 workers x 1 rank, on the embedded platform.

    .venv/bin/python bench/ranks_per_worker.py [--steps 120] [--repeats 2]

Both layouts train the same tiny model on the same data with the same global batch, through
`carina run` (the embedded platform: a worker's entry process starts its ranks), with the same
CPU request in all (2 CPUs: one thread per rank). The figure is the tokens/s rank 0 logs (all
ranks together), the median of its step events after a warmup; the runs alternate
(A B A B ...) so machine load hits both alike, and the ratio is of the medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

WARMUP_STEPS = 20


def manifest(name: str, replicas: int, ranks: int, cpu: str, steps: int) -> dict:
    return {
        "apiVersion": "carina.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "resources": {"cpu": cpu, "memory": "1Gi", "ranksPerWorker": ranks},
            "checkpoint": {"intervalSteps": 100_000},
            "workload": {
                "pretrain": {
                    "model": {"preset": "tiny"},
                    "data": {"source": "python-stdlib", "maxBytes": 400_000},
                    "steps": steps,
                    "batchSize": 16,
                    "microBatchSize": 16,
                    "seqLen": 64,
                    "evalEvery": 0,
                    "logEvery": 5,
                    "schedule": {"warmupSteps": 5},
                }
            },
        },
    }


def tokens_per_second(state: Path) -> float:
    """Median tokens/s of rank 0's step events after the warmup."""
    [log] = state.glob("jobs/default/*/logs/worker-0.log")
    rates = []
    for line in log.read_text().splitlines():
        line = line.removeprefix("[rank 0] ")
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "step" and event["step"] > WARMUP_STEPS:
            rates.append(float(event["tokensPerSecond"]))
    return statistics.median(rates)


def run(layout: str, replicas: int, ranks: int, cpu: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.yaml"
        path.write_text(yaml.safe_dump(manifest(layout, replicas, ranks, cpu, steps)))
        env = {k: v for k, v in os.environ.items() if k not in ("CARINA_SERVER", "CARINA_TOKEN")}
        result = subprocess.run(
            [sys.executable, "-m", "carina.platform", "run", str(path), "--state-dir", tmp],
            capture_output=True,
            text=True,
            env={**env, "CARINA_CAPACITY_CPUS": "2"},
            cwd=tmp,
            timeout=900,
        )
        if result.returncode != 0 or "Succeeded" not in result.stdout:
            raise SystemExit(f"{layout} failed:\n{result.stdout}\n{result.stderr}")
        return tokens_per_second(Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    layouts = {
        "2x2": (2, 2, "1"),  # two workers, two ranks each: 2 CPUs
        "4x1": (4, 1, "500m"),  # four workers, one rank each: 2 CPUs
    }
    results: dict[str, list[float]] = {name: [] for name in layouts}
    started = time.perf_counter()
    for _ in range(args.repeats):
        for name, (replicas, ranks, cpu) in layouts.items():
            results[name].append(
                run(f"w{name.replace('x', 'by')}", replicas, ranks, cpu, args.steps)
            )
    a, b = (statistics.median(results[n]) for n in layouts)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"world size 4, tiny preset, global batch 16 x 64 tokens, {args.steps} steps")
    for name, values in results.items():
        print(f"  {name}: median {statistics.median(values):,.0f} tokens/s  runs {values}")
    print(f"ratio 2x2 / 4x1: {a / b:.3f}   ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
