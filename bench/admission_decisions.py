"""Admission decisions per second: one `queueing.schedule` round over a large pending backlog.

Method: 8 ClusterQueues in 2 cohorts of 4, of mixed sizes (8, 16, 32 and 64 GPUs in each
cohort, with CPU, memory and some pods quotas; some borrowing and lending limits; half
preempt lower priorities within their queue, some reclaim from their cohort, one is
StrictFIFO). Each queue is filled to 85% of its nominal quota by running gangs of 1 to 8
GPUs, a few of them leaving after a preemption; and N pending jobs of 1 to 16 GPUs,
priorities 0 to 3, are spread over the queues at random (seeded). One round decides for
every job: most wait (each with a reason, a message with numbers and a position), some are
admitted (some by borrowing), some preempt. The input is the same every round (`schedule`
is pure), so a round is timed `--repeats` times after one warm-up; the best time is the
figure (other load on the machine only ever adds to it), the median is printed beside it.

The backlog (default 10,000 pending jobs) runs side by side with a baseline of 1,000 in the
same process; the ratio of time per decision says how far from linear a round scales.

    .venv/bin/python bench/admission_decisions.py [--pending 10000] [--baseline 1000]
        [--repeats 5] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

from carina.platform.api.queues import (
    CPU,
    GPU,
    MEMORY,
    PODS,
    ReclaimWithinCohort,
    WithinClusterQueue,
)
from carina.platform.planning.queueing import Decisions, Held, JobInfo, QueueInfo, Quota, schedule

GI = 2.0**30
SIZES = (8, 16, 32, 64)  # GPUs per queue, in each cohort


def make_queues() -> list[QueueInfo]:
    queues = []
    for c, cohort in enumerate(("research", "product")):
        for i, gpus in enumerate(SIZES):
            quotas = {
                GPU: Quota(gpus, borrowing_limit=gpus if i % 2 else None, lending_limit=None),
                CPU: Quota(gpus * 12.0, lending_limit=gpus * 6.0 if i == 3 else None),
                MEMORY: Quota(gpus * 96 * GI),
            }
            if i == 1:
                quotas[PODS] = Quota(gpus / 2)
            queues.append(
                QueueInfo(
                    name=f"{cohort}-{gpus}",
                    quotas=quotas,
                    cohort=cohort,
                    strict_fifo=(c, i) == (1, 0),
                    within=WithinClusterQueue.LOWER_PRIORITY
                    if i % 2 == 0
                    else (WithinClusterQueue.NEVER),
                    reclaim=ReclaimWithinCohort.ANY if i >= 2 else ReclaimWithinCohort.NEVER,
                )
            )
    return queues


def demand(gpus: int, workers: int) -> dict[str, float]:
    return {GPU: float(gpus), CPU: gpus * 10.0, MEMORY: gpus * 80 * GI, PODS: float(workers)}


def make_jobs(queues: list[QueueInfo], pending: int, seed: int) -> list[JobInfo]:
    rng = random.Random(seed)
    now = 100_000.0
    waiting: list[JobInfo] = []
    for i in range(pending):
        q = rng.choice(queues)
        gpus = rng.choice((1, 1, 2, 4, 8, 16))
        waiting.append(
            JobInfo(
                key=f"{q.name}/pending-{i}",
                queue=q.name,
                demand=demand(gpus, max(1, gpus // 4)),
                priority=rng.choice((0, 0, 1, 2, 3)),
                timestamp=now - rng.uniform(0, 3600),
            )
        )
    jobs: list[JobInfo] = []
    for q in queues:
        preemptors = [j.key for j in waiting if j.queue == q.name and j.priority == 3]
        free = q.quotas[GPU].nominal * 0.85  # a little headroom: some are admitted
        n = 0
        while free >= 1:
            gpus = min(int(free), rng.choice((1, 2, 4, 8)))
            free -= gpus
            workers = max(1, gpus // 4)
            usage = {r: v for r, v in demand(gpus, workers).items() if r in q.quotas}
            n += 1
            leaving = n % 7 == 0 and preemptors
            jobs.append(
                JobInfo(
                    key=f"{q.name}/run-{n}",
                    queue=q.name,
                    demand=usage,
                    priority=rng.randint(0, 3),
                    timestamp=now - rng.uniform(3600, 86400),
                    held=Held(q.name, usage, now - rng.uniform(600, 36000)),
                    all_ready=True,
                    workers_gone=False,
                    evicting="Preempted" if leaving else None,
                    evicted_for=rng.choice(preemptors) if leaving else None,
                    last_checkpoint_at=now - rng.uniform(0, 1800),
                )
            )
    return jobs + waiting


def one(pending: int, repeats: int, seed: int) -> tuple[float, float, Decisions, int]:
    queues = make_queues()
    jobs = make_jobs(queues, pending, seed)
    now = 100_000.0
    schedule(queues, jobs, now)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        d = schedule(queues, jobs, now)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), d, len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    print(
        f"8 ClusterQueues in 2 cohorts ({', '.join(map(str, SIZES))} GPUs each), "
        f"best of {args.repeats} rounds after a warm-up, seed {args.seed}"
    )
    print(
        f"{'pending':>8} {'jobs':>7} {'admit':>6} {'evict':>6} {'wait':>7}"
        f" {'ms/round':>9} {'(median)':>9} {'decisions/s':>12} {'us/decision':>12}"
    )
    per_decision = {}
    for pending in (args.baseline, args.pending):
        seconds, median, d, total = one(pending, args.repeats, args.seed)
        decided = len(d.admit) + len(d.evict) + len(d.release) + len(d.pending)
        per_decision[pending] = seconds / decided
        print(
            f"{pending:>8,} {total:>7,} {len(d.admit):>6} {len(d.evict):>6} {len(d.pending):>7,}"
            f" {seconds * 1000:>9.1f} {median * 1000:>9.1f} {decided / seconds:>12,.0f}"
            f" {seconds / decided * 1e6:>12.1f}"
        )
    ratio = per_decision[args.pending] / per_decision[args.baseline]
    print(
        f"time per decision at {args.pending:,} / at {args.baseline:,}: {ratio:.2f}"
        " (1.00: a round scales linearly with the backlog)"
    )


if __name__ == "__main__":
    main()
