"""GPU probes of the node health agent: `python -m carina.workloads.health_probe PROBE`.

PROBE is `bandwidth` or `allreduce`.

The agent (`carina.operators.health`) needs no torch; it starts this module on an idle node
and reads the one JSON line it prints:

    {"probe": "bandwidth", "supported": true, "gpus": 8, "product": "NVIDIA A100-SXM4-80GB",
     "values": {"min_gbps": 1712.4, "gpu0_gbps": 1730.1, ...}}
    {"probe": "allreduce", "supported": false, "reason": "CUDA is not available"}
    {"probe": "bandwidth", "supported": true, "error": "CUDA error: ..."}

- bandwidth: on each GPU in turn, copy a 1 GiB buffer into another `ITERATIONS` times, timed
  with CUDA events; a copy reads and writes every byte, so GB/s = 2 * bytes * iterations / s.
- allreduce: one process drives every GPU through NCCL (`torch.cuda.nccl.all_reduce`, no
  rendezvous needed); first a sum of ones must come back as the GPU count everywhere, then
  256 MiB per GPU is reduced `ITERATIONS` times. Reported as nccl-tests' bus bandwidth,
  algbw * 2(n-1)/n, which is comparable across GPU counts.

Without torch, without CUDA (or, for allreduce, with fewer than two GPUs) the probe says it is
unsupported; the exit code is 0 whenever a line was printed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

BANDWIDTH_BYTES = 1 << 30
ALLREDUCE_BYTES = 256 << 20
ITERATIONS = 20
PROBES = ("bandwidth", "allreduce")


def bus_bandwidth_gbps(nbytes: int, seconds: float, ranks: int) -> float:
    """nccl-tests' all-reduce bus bandwidth in GB/s: algbw * 2(n-1)/n."""
    return nbytes / seconds / 1e9 * 2 * (ranks - 1) / ranks


def copy_bandwidth_gbps(nbytes: int, seconds: float, iterations: int) -> float:
    """Device-to-device copy bandwidth in GB/s: each copy reads and writes nbytes."""
    return 2 * nbytes * iterations / seconds / 1e9


def _cuda() -> tuple[Any, str | None]:
    """torch, or None and why the probe cannot run."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not torch.cuda.is_available():
        return None, "CUDA is not available (no GPU visible to torch)"
    return torch, None


def bandwidth(torch: Any) -> dict[str, Any]:
    """Copy bandwidth of each GPU's memory."""
    values: dict[str, float] = {}
    elements = BANDWIDTH_BYTES // 4
    for i in range(torch.cuda.device_count()):
        with torch.cuda.device(i):
            src = torch.ones(elements, dtype=torch.float32, device=f"cuda:{i}")
            dst = torch.empty_like(src)
            dst.copy_(src)  # warm-up
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(ITERATIONS):
                dst.copy_(src)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
            values[f"gpu{i}_gbps"] = copy_bandwidth_gbps(BANDWIDTH_BYTES, seconds, ITERATIONS)
            del src, dst
            torch.cuda.empty_cache()
    values["min_gbps"] = min(values.values())
    return values


def allreduce(torch: Any) -> dict[str, Any]:
    """Bus bandwidth of an all-reduce over every GPU, after a correctness check."""
    from torch.cuda import nccl

    n = torch.cuda.device_count()
    ones = [torch.ones(1024, device=f"cuda:{i}") for i in range(n)]
    nccl.all_reduce(ones)
    for i, t in enumerate(ones):
        torch.cuda.synchronize(i)
        if not bool((t == n).all()):
            raise RuntimeError(f"all-reduce of ones gave a wrong sum on GPU {i}")
    buffers = [torch.zeros(ALLREDUCE_BYTES // 4, device=f"cuda:{i}") for i in range(n)]
    nccl.all_reduce(buffers)  # warm-up: NCCL builds its rings here
    for i in range(n):
        torch.cuda.synchronize(i)
    began = time.perf_counter()
    for _ in range(ITERATIONS):
        nccl.all_reduce(buffers)
    for i in range(n):
        torch.cuda.synchronize(i)
    seconds = (time.perf_counter() - began) / ITERATIONS
    return {"busbw_gbps": bus_bandwidth_gbps(ALLREDUCE_BYTES, seconds, n), "gpus": float(n)}


def run(probe: str) -> dict[str, Any]:
    """The probe's report (never raises: a failing GPU is a report too)."""
    report: dict[str, Any] = {"probe": probe}
    torch, why = _cuda()
    if torch is None:
        return {**report, "supported": False, "reason": why}
    n = torch.cuda.device_count()
    if probe == "allreduce" and n < 2:
        return {**report, "supported": False, "reason": f"all-reduce needs 2 GPUs, {n} visible"}
    report.update(supported=True, gpus=n, product=torch.cuda.get_device_name(0))
    try:
        report["values"] = bandwidth(torch) if probe == "bandwidth" else allreduce(torch)
    except Exception as exc:  # a CUDA or NCCL error is the finding
        report["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in PROBES:
        print(
            f"usage: python -m carina.workloads.health_probe {{{'|'.join(PROBES)}}}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(run(args[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
