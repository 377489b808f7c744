"""What a substrate observed of one worker, in the words planning needs.

The operator builds these from Pods (`observe_pod`), the embedded substrate from its local
processes; `derive_status` and `next_action` read nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from carina.platform.api.types import CheckpointStatus, Progress
from carina.workloads.contract import TerminationMessage

WorkerPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]

# Labels every worker pod carries; the operator selects and observes pods by them.
JOB_LABEL = "carina.dev/job"
INDEX_LABEL = "carina.dev/index"
RESTART_LABEL = "carina.dev/restart"


@dataclass(frozen=True)
class ObservedWorker:
    """One worker (pod or local process) as last seen."""

    index: int
    phase: WorkerPhase
    ready: bool
    restart: int  # the CARINA_RESTART generation it was started with
    exit_code: int | None = None
    reason: str | None = None  # e.g. "Evicted", "NodeLost", "Unschedulable"
    node: str | None = None
    # The worker's last word (contract.TerminationMessage): JSON with global rank 0's final
    # progress and newest checkpoint, the first failing rank, its exit code and log tail; or,
    # where the entry process itself died, the kubelet's copy of the log tail
    # (FallbackToLogsOnError).
    termination_message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deleting: bool = False  # being stopped (deletion requested); gone soon

    @property
    def active(self) -> bool:
        """Still holds (or will hold) its node: not finished and not on its way out."""
        return self.phase in ("Pending", "Running", "Unknown") and not self.deleting

    @property
    def finished(self) -> bool:
        """Exited for good: it holds no node, whether or not it is being deleted."""
        return self.phase in ("Succeeded", "Failed")


def parse_checkpoint(message: str | None, when: datetime | None) -> CheckpointStatus | None:
    """The checkpoint a worker acknowledged in its termination message, if any."""
    parsed = TerminationMessage.parse(message)
    if parsed is None or parsed.checkpoint_step is None or not parsed.checkpoint_uri:
        return None
    return CheckpointStatus(step=parsed.checkpoint_step, uri=parsed.checkpoint_uri, time=when)


def _final_word(
    workers: Sequence[ObservedWorker], generation: int
) -> tuple[TerminationMessage, ObservedWorker] | None:
    for w in workers:
        if w.restart != generation:
            continue
        said = TerminationMessage.parse(w.termination_message)
        if said is not None and said.step is not None:
            return said, w
    return None


def said_final_word(workers: Sequence[ObservedWorker], generation: int) -> bool:
    """Whether global rank 0 of `generation` has given its final progress (it has exited)."""
    return _final_word(workers, generation) is not None


def final_progress(
    workers: Sequence[ObservedWorker], generation: int, last: Progress | None, now: datetime
) -> Progress | None:
    """The progress global rank 0 of `generation` ended with, from its termination message.

    Its step, total steps and loss, over the last known progress (tokens per second stay as
    last reported); `last` itself when they agree, so status does not change again on every
    reconcile. None when no worker of the generation has said it.
    """
    found = _final_word(workers, generation)
    if found is None:
        return None
    said, worker = found
    base = last or Progress()
    final = base.model_copy(
        update={
            "step": said.step,
            "total_steps": base.total_steps if said.total_steps is None else said.total_steps,
            "loss": base.loss if said.loss is None else said.loss,
        }
    )
    if final == base:
        return base
    final.updated_at = worker.finished_at or now
    return final


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# Why a pod is going away, from its DisruptionTarget condition (Kubernetes >= 1.26).
_DISRUPTION_REASONS = {
    "DeletionByTaintManager": "NodeLost",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "DeletionByPodGC": "NodeLost",
}


def observe_pod(pod: Mapping[str, Any]) -> ObservedWorker:
    """An ObservedWorker from a worker Pod (a dict as the API returns it)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    phase = status.get("phase") or "Pending"
    if phase not in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
        phase = "Unknown"

    reason = status.get("reason")
    disruption = conditions.get("DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        reason = _DISRUPTION_REASONS.get(disruption.get("reason", ""), reason or "Evicted")
    scheduled = conditions.get("PodScheduled")
    if reason is None and scheduled and scheduled.get("status") == "False":
        reason = scheduled.get("reason")

    exit_code = message = started = finished = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "terminated" in state:
            term = state["terminated"]
            if exit_code is None or term.get("exitCode", 0) != 0:
                exit_code = term.get("exitCode")
                message = term.get("message") or message
                finished = _time(term.get("finishedAt"))
            started = started or _time(term.get("startedAt"))
        elif "running" in state:
            started = started or _time(state["running"].get("startedAt"))

    ready = conditions.get("Ready", {}).get("status") == "True"
    return ObservedWorker(
        index=int(labels.get(INDEX_LABEL, "0")),
        phase=phase,  # type: ignore[arg-type]
        ready=ready and phase == "Running",
        restart=int(labels.get(RESTART_LABEL, "0")),
        exit_code=exit_code,
        reason=reason,
        node=(pod.get("spec") or {}).get("nodeName"),
        termination_message=message,
        started_at=started or _time(status.get("startTime")),
        finished_at=finished,
        deleting=bool(meta.get("deletionTimestamp")),
    )
