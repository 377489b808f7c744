"""Stand-ins for the health agent's unit tests: captured command output, a fake API server.

`FakeCommands` answers the commands a check runs with text captured from real tools (the
files under tests/data/health/); `FakeNodeApi` is a Node and its pods in memory, applying the
agent's patches the way the API server would (labels merged, conditions merged by type).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carina.operators.health.checks import ApiReading, CommandOutput, Context

DATA = Path(__file__).resolve().parent / "data" / "health"


def fixture(name: str) -> str:
    """A captured output under tests/data/health/."""
    return (DATA / name).read_text()


@dataclass
class FakeCommands:
    """argv[0] (and, for nvidia-smi, the query) -> the output it gives; others not installed."""

    answers: dict[str, CommandOutput] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def answer(self, key: str, stdout: str = "", returncode: int = 0, **kw: Any) -> FakeCommands:
        self.answers[key] = CommandOutput(True, returncode, stdout, **kw)
        return self

    def gpus(self, query: str, remap: str) -> FakeCommands:
        """nvidia-smi answering both queries with these fixture files."""
        return self.answer("nvidia-smi --query-gpu", fixture(query)).answer(
            "nvidia-smi --query-remapped-rows", fixture(remap)
        )

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandOutput:
        self.calls.append(list(argv))
        for key, output in self.answers.items():
            program, _, option = key.partition(" ")
            if argv[0] == program and all(
                any(a.startswith(part) for a in argv[1:]) for part in option.split()
            ):
                return output
        return CommandOutput(found=False)


def context(
    commands: FakeCommands | None = None,
    labels: dict[str, str] | None = None,
    api: ApiReading | None = None,
) -> Context:
    """A check's context on a node named vela-0."""
    return Context(
        node="vela-0",
        labels=labels or {},
        api=api or ApiReading(error=None, latency_s=0.01, skew_s=0.2),
        run=commands or FakeCommands(),
        python="python3",
    )


def make_node(name: str = "vela-0", labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node as the API server returns it, with the kubelet's Ready condition."""
    return {
        "metadata": {"name": name, "labels": dict(labels or {}), "annotations": {}},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
            ]
        },
    }


def gpu_pod(name: str, phase: str = "Running", gpus: str = "8") -> dict[str, Any]:
    """A pod bound to the node asking for GPUs."""
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
        "status": {"phase": phase},
    }


@dataclass
class FakeNodeApi:
    """One Node and the pods on it, in memory; patches applied as the API server would."""

    node: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    skew_s: float = 0.1
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def read(self, name: str) -> tuple[dict[str, Any] | None, ApiReading]:
        if self.node is None:
            return None, ApiReading(error=f"reading node {name}: 404 Not Found")
        return copy.deepcopy(self.node), ApiReading(None, latency_s=0.01, skew_s=self.skew_s)

    def pods_on(self, name: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        assert self.node is not None
        self.writes.append(("labels", patch))
        labels = self.node["metadata"].setdefault("labels", {})
        for key, value in patch["metadata"]["labels"].items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value

    def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        assert self.node is not None
        self.writes.append(("status", patch))
        conditions = self.node["status"].setdefault("conditions", [])
        for new in patch["status"]["conditions"]:
            conditions[:] = [c for c in conditions if c["type"] != new["type"]] + [new]

    def condition(self, type_: str) -> dict[str, Any] | None:
        assert self.node is not None
        return next((c for c in self.node["status"]["conditions"] if c["type"] == type_), None)
