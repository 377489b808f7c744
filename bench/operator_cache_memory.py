"""The operator's cache at 10,000 jobs x 4 workers: what it keeps, against keeping whole objects.

    .venv/bin/python bench/operator_cache_memory.py [--jobs 10000] [--workers 4]

Method: a Running TrainingJob and one of its worker pods, as the API server sent them to a
watch during the 10,000-job run of bench/operator_scale.py (bench/data/, managedFields and
all), are decoded `--jobs` times (and the pod `--jobs x --workers` times) with fresh names,
as kopf hands each event over. Two caches are filled side by side in one run, measured with
tracemalloc (Python objects only; the interpreter, kopf and the libraries come on top, which
bench/operator_scale.py's RSS includes):

- whole: every job and pod body kept as it arrived (what a cache of raw objects costs);
- jobs whole: the Cache's pod records, its jobs kept as they arrived (managedFields and all);
- kept: `carina.operators.runtime.cache.Cache` (jobs without managedFields, pods as records).
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

from carina.operators.runtime.cache import Cache

DATA = Path(__file__).parent / "data"


def copies(text: str, name: str, count: int, field: str) -> Any:
    for i in range(count):
        body = json.loads(text)
        body["metadata"]["name"] = f"{name}-{i:05d}"
        body["metadata"]["uid"] = f"{field}-{i}"
        body["metadata"]["resourceVersion"] = str(1000 + i)
        yield i, body


def measure(fill: Any) -> int:
    gc.collect()
    tracemalloc.start()
    kept = fill()
    gc.collect()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()
    job_text = (DATA / "trainingjob-running.json").read_text()
    pod_text = (DATA / "worker-pod-running.json").read_text()
    job_label = next(k for k in json.loads(pod_text)["metadata"]["labels"] if "job" in k)

    def pods() -> Any:
        for i, body in copies(pod_text, "pod", args.jobs * args.workers, "pod"):
            job = f"job-{i // args.workers:05d}"
            body["metadata"]["labels"][job_label] = job
            body["metadata"]["name"] = f"{job}-worker-{i % args.workers}-r0"
            yield body

    def whole() -> Any:
        jobs = {b["metadata"]["name"]: b for _, b in copies(job_text, "job", args.jobs, "job")}
        return jobs, list(pods())

    def jobs_whole() -> Cache:
        cache = Cache()
        for _, body in copies(job_text, "job", args.jobs, "job"):
            cache.jobs[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
        for body in pods():
            cache.put_pod(body)
        return cache

    def kept() -> Cache:
        cache = Cache()
        for _, body in copies(job_text, "job", args.jobs, "job"):
            cache.put_job(body)
        for body in pods():
            cache.put_pod(body)
        return cache

    print(
        f"{args.jobs} jobs x {args.workers} workers; objects of {len(job_text):,} and "
        f"{len(pod_text):,} bytes of JSON"
    )
    a, b, c = measure(whole), measure(jobs_whole), measure(kept)
    print(f"whole objects: {a / 2**20:.0f} MiB")
    print(f"jobs whole:    {b / 2**20:.0f} MiB ({b / a:.2f}x)")
    print(f"the cache:     {c / 2**20:.0f} MiB ({c / a:.2f}x; {c / b:.2f}x jobs whole)")


if __name__ == "__main__":
    main()
