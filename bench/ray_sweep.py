"""Trials per hour of a Ray Tune sweep against the same trials run one after another.

    .venv/bin/python bench/ray_sweep.py [--trials 8] [--steps 150] [--workers 2]

Both sides run the same proxy trials (the tiny µP model, WSD, `train_proxy`) with one CPU
thread each. The sequential side calls `train_proxy` for each trial in this process, after
one untimed warm-up trial (corpus read, torch imported). The Ray side is the `sweep`
workload itself: `--workers` processes of `python -m carina.workloads` with the worker
contract's environment, as the embedded platform starts them (one CPU each, worker 0 the Ray
head); its figures come from the head's event lines, timestamped as they arrive:

- start-up: from launch to the head's `ray_cluster` line (every node joined, driver connected);
- sweep: from `ray_cluster` to `report` (Tune's trials, with actor start and reuse);
- trials per hour = trials / sweep time; ideal = workers x the sequential rate.

A third side runs the trials in `--workers` plain processes (no Ray, each after its own
warm-up trial): what this machine's cores give in parallel, so Ray's own cost is the gap
between it and the Ray side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from carina.workloads.config import SweepConfig
from carina.workloads.sweep.proxy import train_proxy
from carina.workloads.sweep.trials import grid


def make_config(trials: int, steps: int) -> SweepConfig:
    """Trials at lrs 2e-3 x 1.5^i: none diverges for up to 8 trials at 150 steps."""
    batch, seq = 8, 64
    lrs = [2e-3 * 1.5**i for i in range(max(3, trials))][:trials]
    return SweepConfig.model_validate(
        {
            "model": {"preset": "tiny"},
            "data": {"source": "python-stdlib", "maxBytes": 400_000},
            "batchSizes": [batch],
            "tokens": [steps * batch * seq],
            "lrs": lrs if len(lrs) >= 3 else [1e-3, 2e-3, 4e-3],
            "seqLen": seq,
            "evalBatches": 2,
            "trialCpus": 1,
            "objectStoreMb": 96,
        }
    )


def sequential(cfg: SweepConfig) -> float:
    """Seconds to run every trial of `cfg` one after another (after one warm-up trial)."""
    torch.set_num_threads(1)
    trials = grid(cfg)
    train_proxy(cfg, trials[0].batch_size, trials[0].tokens, trials[0].lr)  # warm-up
    start = time.perf_counter()
    for t in trials:
        train_proxy(cfg, t.batch_size, t.tokens, t.lr)
    return time.perf_counter() - start


def _half(job: tuple[dict, list[int]]) -> float:
    """One process's share of the trials (the no-Ray parallel baseline)."""
    cfg_doc, indices = job
    cfg = SweepConfig.model_validate(cfg_doc)
    torch.set_num_threads(1)
    trials = grid(cfg)
    train_proxy(cfg, trials[0].batch_size, trials[0].tokens, trials[0].lr)  # warm-up
    start = time.perf_counter()
    for i in indices:
        train_proxy(cfg, trials[i].batch_size, trials[i].tokens, trials[i].lr)
    return time.perf_counter() - start


def parallel(cfg: SweepConfig, workers: int) -> float:
    """Seconds until `workers` plain processes (no Ray) have run every trial between them."""
    n = len(grid(cfg))
    doc = cfg.model_dump(by_alias=True)
    shares = [(doc, list(range(w, n, workers))) for w in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        return max(pool.map(_half, shares))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_sweep(cfg: SweepConfig, workers: int, root: Path) -> dict[str, float]:
    """Run the sweep workload on `workers` local worker processes; its timings."""
    spec = root / "spec.json"
    spec.write_text(json.dumps({"kind": "sweep", "config": cfg.model_dump(by_alias=True)}))
    port = _free_port()
    events: dict[str, float] = {}
    start = time.perf_counter()
    procs = []
    for rank in range(workers):
        env = {
            **os.environ,
            "GROUP_RANK": str(rank),
            "RANK": str(rank),
            "LOCAL_RANK": "0",
            "WORLD_SIZE": str(workers),
            "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "CARINA_JOB": f"bench-{port}",
            "CARINA_SPEC": str(spec),
            "CARINA_CHECKPOINT_URI": (root / "ckpt").as_uri(),
            "CARINA_TERMINATION_LOG": str(root / f"termination-{rank}"),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "carina.workloads"],
                env=env,
                stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )

    def read_head() -> None:
        assert procs[0].stdout is not None
        for line in procs[0].stdout:
            if line.startswith("{"):
                event = json.loads(line).get("event")
                events.setdefault(str(event), time.perf_counter() - start)

    reader = threading.Thread(target=read_head, daemon=True)
    reader.start()
    codes = [p.wait(timeout=1800) for p in procs]
    reader.join(10)
    if codes != [0] * workers:
        raise SystemExit(f"sweep workers exited {codes}")
    ledger = json.loads((root / "ckpt" / "sweep" / "ledger.json").read_text())
    return {
        "startup": events["ray_cluster"],
        "sweep": events["report"] - events["ray_cluster"],
        "total": time.perf_counter() - start,
        "nodes": len({r["node"] for r in ledger.values()}),
        "trial_seconds": sum(r["seconds"] for r in ledger.values()) / len(ledger),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cfg = make_config(args.trials, args.steps)
    n = len(grid(cfg))
    seq_s = sequential(cfg)
    par_s = parallel(cfg, args.workers)
    with tempfile.TemporaryDirectory(prefix="ray-sweep-") as tmp:
        ray = ray_sweep(cfg, args.workers, Path(tmp))
    seq_rate = n / seq_s * 3600
    ray_rate = n / ray["sweep"] * 3600
    ideal = args.workers * seq_rate
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(f"{n} trials of {args.steps} steps (tiny µP model, batch 8 x 64 tokens), 1 CPU each")
    print(f"sequential, no Ray:      {seq_s:7.1f} s   {seq_rate:8.0f} trials/h")
    print(
        f"{args.workers} processes, no Ray:     {par_s:7.1f} s   {n / par_s * 3600:8.0f} trials/h"
        f"   (the machine's own parallel speed-up: {seq_s / par_s:.2f}x)"
    )
    print(
        f"Ray Tune, {args.workers} workers:      {ray['sweep']:7.1f} s   {ray_rate:8.0f} trials/h"
        f"   ({ray_rate / ideal:.0%} of ideal {ideal:.0f}/h; trials ran on {ray['nodes']} nodes)"
    )
    print(
        f"Ray start-up (launch to every node joined): {ray['startup']:.1f} s;"
        f" whole Ray run {ray['total']:.1f} s; mean trial inside Ray {ray['trial_seconds']:.2f} s"
        f" vs {seq_s / n:.2f} s alone"
    )


if __name__ == "__main__":
    main()
