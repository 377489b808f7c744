"""Progress from rank 0's Prometheus endpoint: a pure parser of the text exposition format.

Live progress reaches a job's status by one channel on both substrates: each scrapes global
rank 0's `/metrics` (the operator at `http://<rank-0 pod IP>:<CARINA_METRICS_PORT>/metrics`,
the embedded substrate at `http://127.0.0.1:<port>/metrics`; see docs/architecture.md) and
reads the text with `read_scrape`: `status.progress` from the step gauges, the newest
checkpoint's step (`status.lastCheckpoint`, so every completed save reaches status, not only
the one a preempted worker acknowledges) and the damaged checkpoints a resume passed over
(`carina_checkpoint_damaged`), which the engine records in `status.damagedCheckpoints` and
announces once (`record_damaged`, `engine.events`). Rank 0's median step time
(`carina_worker_step_seconds`) becomes `progress.stepSeconds`, the yardstick of the stall
rule (`stall.py`), and every rank's compute time per step
(`carina_worker_rank_step_seconds{rank}`) comes out as `Scrape.rank_seconds`, from which the
engine names stragglers (`stragglers.py`). A staged pretraining run's stage
(`carina_worker_stage{stage}`, its 1-based index, and `carina_worker_stages`) becomes
`progress.stage`, `stageIndex` and `stageCount`. Once the worker has exited its endpoint is gone;
its final step then comes from its termination message (`observed.final_progress`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from carina.platform.api.types import (
    CheckpointStatus,
    DamagedCheckpoint,
    Progress,
    TrainingJobStatus,
)
from carina.workloads import metric_names as names
from carina.workloads.contract import checkpoint_step_uri

_WANTED = {
    names.WORKER_STEP: "step",
    names.WORKER_TOTAL_STEPS: "total_steps",
    names.WORKER_LOSS: "loss",
    names.WORKER_TOKENS_PER_SECOND: "tokens_per_second",
    names.CHECKPOINT_LAST_STEP: "checkpoint_step",
    # seconds this attempt's rank 0 spent in collective saves (the histogram's running sum)
    names.CHECKPOINT_SAVE_SECONDS + "_sum": "checkpoint_seconds",
    names.WORKER_STEP_SECONDS: "step_seconds",
    names.WORKER_STAGES: "stage_count",
}

# How many damaged checkpoints status remembers (the newest): enough to never announce one
# twice, few enough that status stays small.
DAMAGED_KEPT = 16

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass(frozen=True)
class Scrape:
    """What one scrape of rank 0's /metrics says."""

    progress: Progress | None
    checkpoint_step: int | None
    damaged: tuple[DamagedCheckpoint, ...] = ()
    # Each rank's recent compute seconds per step, by global rank (empty: not reported).
    rank_seconds: Mapping[int, float] = field(default_factory=dict)


def _labels(line: str, at: int) -> tuple[dict[str, str], int] | None:
    """The labels of `name{a="b",...}` from just after the brace; and where they end."""
    labels: dict[str, str] = {}
    while True:
        while at < len(line) and line[at] in " ,":
            at += 1
        if at >= len(line):
            return None
        if line[at] == "}":
            return labels, at + 1
        eq = line.find("=", at)
        if eq < 0 or eq + 1 >= len(line) or line[eq + 1] != '"':
            return None
        key, at, value = line[at:eq].strip(), eq + 2, []
        while at < len(line) and line[at] != '"':
            if line[at] == "\\" and at + 1 < len(line):
                value.append(_ESCAPES.get(line[at + 1], "\\" + line[at + 1]))
                at += 2
            else:
                value.append(line[at])
                at += 1
        if at >= len(line):
            return None
        labels[key] = "".join(value)
        at += 1


def samples(text: str, wanted: Iterable[str]) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each finite sample of the wanted metrics, in order."""
    wanted = set(wanted)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        cut = brace if brace >= 0 and (space < 0 or brace < space) else space
        if cut < 0 or line[:cut] not in wanted:
            continue
        labels: dict[str, str] = {}
        rest = line[cut:]
        if cut == brace:
            parsed = _labels(line, brace + 1)
            if parsed is None:
                continue
            labels, end = parsed
            rest = line[end:]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            yield line[:cut], labels, value


def parse_metrics(text: str) -> dict[str, float]:
    """The first sample of each wanted metric (`name{labels} value [ts]` lines)."""
    found: dict[str, float] = {}
    for metric, _, value in samples(text, _WANTED):
        found.setdefault(_WANTED[metric], value)
    return found


def parse_stage(text: str) -> tuple[str, int] | None:
    """The stage a staged run is training: (name, 1-based index), or None for a plain run."""
    for _, labels, value in samples(text, (names.WORKER_STAGE,)):
        name = labels.get("stage", "")
        if name and value >= 1:
            return name, int(value)
    return None


def _progress(
    values: dict[str, float], now: datetime, stage: tuple[str, int] | None = None
) -> Progress | None:
    step = int(values.get("step", 0))
    if step <= 0:
        return None
    count = int(values.get("stage_count", 0))
    return Progress(
        stage=stage[0] if stage else None,
        stage_index=stage[1] if stage else None,
        stage_count=count if stage and count > 0 else None,
        step=step,
        total_steps=int(values.get("total_steps", 0)),
        loss=values.get("loss"),
        tokens_per_second=values.get("tokens_per_second"),
        checkpoint_seconds=values.get("checkpoint_seconds"),
        step_seconds=values.get("step_seconds") or None,  # 0: no step timed yet
        updated_at=now,
        # This scrape's word; the engine keeps the earlier time while the step stays put.
        stepped_at=now,
    )


def parse_progress(text: str, now: datetime) -> Progress | None:
    """Progress from a worker's /metrics text, or None before its first logged step.

    The step gauge reads 0 until then, also in a restarted worker that is still loading its
    checkpoint: "no report yet", so status keeps the last progress it knows.
    """
    return _progress(parse_metrics(text), now, parse_stage(text))


def parse_checkpoint_step(text: str) -> int | None:
    """The step of the newest complete checkpoint a worker reports, or None before the first.

    The gauge reads 0 until a save completes (or a resume loads one); no save happens at step 0.
    """
    step = int(parse_metrics(text).get("checkpoint_step", 0))
    return step if step > 0 else None


def parse_damaged(text: str) -> tuple[DamagedCheckpoint, ...]:
    """The damaged checkpoints a worker's resume passed over, by step."""
    found: dict[str, DamagedCheckpoint] = {}
    for _, labels, value in samples(text, (names.CHECKPOINT_DAMAGED,)):
        try:
            step = int(labels.get("step", ""))
        except ValueError:
            continue
        uri = labels.get("uri", "")
        if value < 1 or not uri:
            continue
        found[uri] = DamagedCheckpoint(
            step=step, uri=uri, file=labels.get("file", ""), reason=labels.get("reason", "")
        )
    return tuple(sorted(found.values(), key=lambda d: (d.step, d.uri)))


def parse_rank_seconds(text: str) -> dict[int, float]:
    """Each rank's recent compute seconds per step, by global rank (rank 0 gathers them)."""
    found: dict[int, float] = {}
    for _, labels, value in samples(text, (names.WORKER_RANK_STEP_SECONDS,)):
        try:
            rank = int(labels.get("rank", ""))
        except ValueError:
            continue
        if rank >= 0 and value > 0:
            found.setdefault(rank, value)
    return found


def read_scrape(text: str, now: datetime) -> Scrape:
    """Everything a substrate takes from one scrape of rank 0's /metrics."""
    values = parse_metrics(text)
    saved = int(values.get("checkpoint_step", 0))
    return Scrape(
        _progress(values, now, parse_stage(text)),
        saved if saved > 0 else None,
        parse_damaged(text),
        parse_rank_seconds(text),
    )


def checkpoint_at(root: str, step: int, when: datetime) -> CheckpointStatus:
    """The checkpoint of `step` under the job's checkpoint root, as status names it.

    The engine takes it as `status.lastCheckpoint` when it is newer than the one there, or
    when the one there is reported damaged.
    """
    return CheckpointStatus(step=step, uri=checkpoint_step_uri(root, step), time=when)


def record_damaged(status: TrainingJobStatus, reported: Iterable[DamagedCheckpoint]) -> None:
    """Add the damaged checkpoints status does not know yet (the newest `DAMAGED_KEPT` stay).

    Status is the memory of what was announced: `engine.events` warns about each entry that
    the last written status lacks, so each damaged checkpoint is announced once, on both
    substrates, across restarts of the operator or of `carina up`.
    """
    known = list(status.damaged_checkpoints or ())
    new = [d for d in reported if d not in known]
    if new:
        status.damaged_checkpoints = (known + new)[-DAMAGED_KEPT:]


def damaged_message(damaged: DamagedCheckpoint) -> str:
    """The CheckpointCorrupt Warning's words for one damaged checkpoint."""
    what = f"{damaged.file}: {damaged.reason}" if damaged.file else damaged.reason
    return (
        f"checkpoint at step {damaged.step} is damaged and was passed over for an older one:"
        f" {what} ({damaged.uri})"
    )
