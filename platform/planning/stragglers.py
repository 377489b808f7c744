"""Stragglers: the ranks whose compute time per step is an outlier, and where they run (pure).

In synchronous data parallel training the slowest rank sets everyone's pace: the others wait
for it in the gradient all-reduce, so every rank's wall step time is the same. What tells
ranks apart is their compute time, from the step's start to their gradients being ready,
before they wait on the others; global rank 0 gathers every rank's recent (median) compute
time and exports it (`carina_worker_rank_step_seconds{rank}`, read into
`Scrape.rank_seconds`).

A rank is a straggler (`outliers`) when its time exceeds the median rank's by more than
`spec.failurePolicy.straggler.factor` (default 1.5) and by a robust margin: `MAD_MARGIN`
scaled median absolute deviations, so the spread of a noisy but healthy gang names no one.
The median is the lower one of an even count. A rank once named stays named while its time
is more than half that excess above the median (hysteresis: a rank hovering at the threshold
is not named again and again). With fewer than `MIN_RANKS` ranks nobody is named: of two, the
slower may as well be the faster one's luck, and on a shared machine (two CPU workers on a
laptop) they trade places from one gather to the next.

`update_stragglers` maps each rank to its worker (`ranks_per_worker` ranks each) and the
worker to its node, and keeps the slowest `STRAGGLERS_KEPT` in `status.stragglers` while the
job is Running (a new gang starts with none). The engine announces each newly named rank
once with a Straggler Warning event (`newly_named`); the operator also exports it as
`carina_job_straggler` and asks the node health agent to check its node.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from statistics import median_low

from carina.platform.api.types import Phase, Straggler, TrainingJob, TrainingJobStatus
from carina.platform.planning.observed import ObservedWorker

# How many stragglers status keeps (the slowest): a whole slow node's ranks fit.
STRAGGLERS_KEPT = 16
# The robust margin: this many scaled median absolute deviations above the median.
MAD_MARGIN = 3.0
# Scales a MAD to a standard deviation's size for normally distributed times.
MAD_SCALE = 1.4826
# The fewest ranks among which an outlier means something.
MIN_RANKS = 3


def outliers(
    seconds: Mapping[int, float], factor: float, named: Collection[int] = ()
) -> list[tuple[int, float, float]]:
    """(rank, its seconds, the median's) of each outlier, slowest first.

    `named` are the ranks already named: they stay while above half the threshold's excess.
    """
    if len(seconds) < MIN_RANKS:
        return []
    times = list(seconds.values())
    middle = median_low(times)
    mad = median_low([abs(t - middle) for t in times])
    margin = MAD_MARGIN * MAD_SCALE * mad
    out = []
    for rank, t in seconds.items():
        excess, spread = (factor - 1) * middle, margin
        if rank in named:
            excess, spread = excess / 2, spread / 2
        if t > middle + excess and t - middle > spread:
            out.append((rank, t, middle))
    return sorted(out, key=lambda o: (-o[1], o[0]))


def find_stragglers(
    job: TrainingJob,
    workers: Sequence[ObservedWorker],
    generation: int,
    seconds: Mapping[int, float],
    named: Collection[int] = (),
) -> list[Straggler]:
    """The gang's stragglers, slowest first (at most `STRAGGLERS_KEPT`), with their nodes."""
    # Here, not at the top: the renderer reaches the engine (placement), which imports this.
    from carina.platform.planning.render import ranks_per_worker

    per_worker = ranks_per_worker(job)
    world = job.spec.replicas * per_worker
    ranks = {r: t for r, t in seconds.items() if 0 <= r < world}
    nodes = {w.index: w.node for w in workers if w.restart == generation}
    factor = job.spec.failure_policy.straggler.factor
    return [
        Straggler(
            rank=rank,
            worker=rank // per_worker,
            node=nodes.get(rank // per_worker),
            step_seconds=t,
            median_seconds=middle,
        )
        for rank, t, middle in outliers(ranks, factor, named)[:STRAGGLERS_KEPT]
    ]


def update_stragglers(
    job: TrainingJob,
    status: TrainingJobStatus,
    workers: Sequence[ObservedWorker],
    seconds: Mapping[int, float] | None,
) -> None:
    """Set `status.stragglers` from the newest per-rank times (in place).

    None while the job is not Running; kept as they were when no new times came.
    """
    if status.phase != Phase.RUNNING:
        status.stragglers = None
        return
    if not seconds:
        return
    named = {s.rank for s in status.stragglers or ()}
    found = find_stragglers(job, workers, status.restarts, seconds, named)
    status.stragglers = found or None


def newly_named(previous: TrainingJobStatus | None, status: TrainingJobStatus) -> list[Straggler]:
    """The stragglers of `status` that `previous` did not name (by rank and node)."""
    known = {(s.rank, s.node) for s in (previous.stragglers if previous else None) or ()}
    return [s for s in status.stragglers or () if (s.rank, s.node) not in known]


def straggler_message(s: Straggler) -> str:
    """The Straggler Warning's words."""
    where = f"worker {s.worker}" + (f" on node {s.node}" if s.node else "")
    ratio = s.step_seconds / s.median_seconds if s.median_seconds > 0 else float("inf")
    return (
        f"rank {s.rank} ({where}) computes a step in {s.step_seconds:.3g}s, {ratio:.1f}x the"
        f" median rank's {s.median_seconds:.3g}s"
    )
