"""What names a checkpoint (`CheckpointRef`) and one a resume passed over (`SkippedCheckpoint`).

Below both `checkpoint` (which finds and loads them) and `telemetry` (which reports them), so
telemetry needs nothing from `checkpoint`, which logs through telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CheckpointRef:
    """A complete checkpoint: its step and the URI of its directory."""

    step: int
    uri: str


@dataclass(frozen=True)
class SkippedCheckpoint:
    """A complete checkpoint that fails the integrity rule: which file, and why."""

    step: int
    uri: str  # the checkpoint's directory
    file: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "uri": self.uri, "file": self.file, "reason": self.reason}
