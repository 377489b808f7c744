"""A staged pretraining run as a plan: which stage each step belongs to, and its settings.

Pure functions of the config. A run without `stages` is one stage named `main` over `steps`
on `data`, so the trainer has a single path. Stage i covers global steps
[start_i, start_i + steps_i); step s (0-based, the (s+1)-th optimizer step) trains in the
stage whose range holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from carina.workloads.config import DataSpec, PretrainConfig, ScheduleSpec
from carina.workloads.runtime.schedules import learning_rate

# The data source a stage without a mixture trains on: the job's `data`.
DEFAULT_SOURCE = "data"


@dataclass(frozen=True)
class Stage:
    """One resolved stage."""

    index: int  # 0-based
    name: str
    start: int  # first global step
    steps: int
    seq_len: int
    rope_theta: float
    mixture: tuple[tuple[str, float], ...]  # (source name, weight), weights as written
    schedule: ScheduleSpec | None  # None: the job's schedule continues over all steps
    checkpoint: bool  # save at the end and keep it

    @property
    def end(self) -> int:
        """One past the last global step of the stage."""
        return self.start + self.steps


def stage_plan(cfg: PretrainConfig) -> list[Stage]:
    """The run's stages in order (one `main` stage when the config has none)."""
    theta = cfg.model.rope_theta
    if not cfg.stages:
        return [
            Stage(
                0, "main", 0, cfg.steps, cfg.seq_len, theta, ((DEFAULT_SOURCE, 1.0),), None, False
            )
        ]
    plan, start = [], 0
    for i, spec in enumerate(cfg.stages):
        seq_len = spec.seq_len or cfg.seq_len
        steps = spec.resolved_steps(cfg.batch_size, seq_len)
        mixture = tuple(spec.mixture.items()) if spec.mixture else ((DEFAULT_SOURCE, 1.0),)
        plan.append(
            Stage(
                i,
                spec.name,
                start,
                steps,
                seq_len,
                spec.rope_theta or theta,
                mixture,
                spec.schedule,
                spec.checkpoint,
            )
        )
        start += steps
    return plan


def sources(cfg: PretrainConfig) -> dict[str, DataSpec]:
    """Every data source a stage may name: the job's `data` and its named `sources`."""
    return {DEFAULT_SOURCE: cfg.data, **(cfg.sources or {})}


def stage_at(plan: list[Stage], step: int) -> Stage:
    """The stage that global step `step` trains in (the last one past the end)."""
    for stage in plan:
        if step < stage.end:
            return stage
    return plan[-1]


def tokens_before(plan: list[Stage], step: int, batch_size: int) -> int:
    """Tokens trained on in the first `step` steps (sequence lengths differ by stage)."""
    total = 0
    for stage in plan:
        done = min(max(step - stage.start, 0), stage.steps)
        total += done * batch_size * stage.seq_len
    return total


def stage_learning_rate(
    cfg: PretrainConfig, plan: list[Stage], step: int, token_offset: int
) -> float:
    """The base learning rate of global step `step`.

    A stage with its own schedule runs it over its own steps, counted from its start (a new
    warmup, its own decay); otherwise the job's schedule runs over the whole run.
    """
    stage = stage_at(plan, step)
    tokens = token_offset + tokens_before(plan, stage.start, cfg.batch_size)
    if stage.schedule is not None:
        return learning_rate(
            step - stage.start,
            stage.schedule,
            cfg.optimizer.lr,
            stage.steps,
            cfg.batch_size,
            stage.seq_len,
            tokens,
        )
    # Power's clock is tokens seen: earlier stages of other lengths shift this stage's count
    # (learning_rate counts (step + 1) · batch · seqLen from the offset).
    shift = tokens_before(plan, stage.start, cfg.batch_size)
    shift -= stage.start * cfg.batch_size * stage.seq_len
    return learning_rate(
        step,
        cfg.schedule,
        cfg.optimizer.lr,
        plan[-1].end,
        cfg.batch_size,
        stage.seq_len,
        token_offset + shift,
    )
