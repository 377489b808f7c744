"""The health agent's plugin protocol: a check has a name and a kind, and answers a CheckResult.

Light checks run every round on every node; invasive ones load the GPUs (a bandwidth probe, an
all-reduce, DCGM's diagnostic) and run only on an idle node (`schedule.py` decides when). A
check answers PASS, WARN or EVICT (the node verdicts of `carina.platform.api.health`) or
UNSUPPORTED: it could not run here (no nvidia-smi, no GPU, no torch with CUDA, no dcgmi).
UNSUPPORTED is never a pass: the verdict lists such checks apart (`verdict.py`).

A check reads the node through its `Context`: the node's name and labels, this round's reading
of the API server, and `run` for commands, so unit tests hand a check captured command output
instead of a GPU. A reading several checks share (one nvidia-smi query serves five of them) is
kept in the context's `memo` for the round.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Outcome(StrEnum):
    """What one check found."""

    PASS = "PASS"
    WARN = "WARN"
    EVICT = "EVICT"
    UNSUPPORTED = "UNSUPPORTED"  # could not run on this node: neither a pass nor a failure


# Severity of the outcomes that count towards a verdict (UNSUPPORTED counts for nothing).
SEVERITY = {Outcome.PASS: 0, Outcome.WARN: 1, Outcome.EVICT: 2}


def worst(outcomes: Iterable[Outcome]) -> Outcome | None:
    """The most severe outcome that counts (None when none does)."""
    counted = [o for o in outcomes if o in SEVERITY]
    return max(counted, key=SEVERITY.__getitem__) if counted else None


class Kind(StrEnum):
    """When a check may run: every round, or only on an idle node."""

    LIGHT = "light"
    INVASIVE = "invasive"


@dataclass(frozen=True)
class Finding:
    """What a rule decided: the outcome, words for a person, and what it measured."""

    outcome: Outcome
    message: str
    values: Mapping[str, float] = field(default_factory=dict)


def unsupported(why: str) -> Finding:
    """The finding of a check that could not run here, saying why."""
    return Finding(Outcome.UNSUPPORTED, why)


@dataclass(frozen=True)
class CheckResult:
    """One check's finding, under the check's name."""

    check: str
    kind: Kind
    outcome: Outcome
    message: str
    values: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, check: str, kind: Kind, finding: Finding) -> CheckResult:
        return cls(check, kind, finding.outcome, finding.message, dict(finding.values))


@dataclass(frozen=True)
class CommandOutput:
    """How a command ended; `found` is False when the program is not installed."""

    found: bool
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.found and not self.timed_out and self.returncode == 0

    def trouble(self) -> str:
        """Why the command did not succeed, in a few words (its last line of stderr)."""
        if not self.found:
            return "not installed"
        if self.timed_out:
            return "timed out"
        lines = (self.stderr or self.stdout).strip().splitlines()
        return f"exit {self.returncode}" + (f": {lines[-1].strip()}" if lines else "")


# Runs argv with a timeout in seconds.
Runner = Callable[[Sequence[str], float], CommandOutput]


def run_command(argv: Sequence[str], timeout: float) -> CommandOutput:
    """Run a command, capturing its output; never raises for a missing or failing program."""
    if shutil.which(argv[0]) is None:
        return CommandOutput(found=False)
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return CommandOutput(found=True, timed_out=True)
    except OSError as exc:
        return CommandOutput(found=True, returncode=127, stderr=str(exc))
    return CommandOutput(True, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class ApiReading:
    """This round's read of the agent's own Node object from the API server."""

    error: str | None  # None: the read succeeded
    latency_s: float = 0.0
    skew_s: float | None = None  # this machine's clock minus the server's (None: unknown)


@dataclass
class Context:
    """What a check may read: the node, the API server's answer, commands; one per round."""

    node: str
    labels: Mapping[str, str]
    api: ApiReading
    run: Runner = run_command
    python: str = "python3"  # the interpreter that runs the GPU probes
    memo: dict[str, Any] = field(default_factory=dict)


class Check(Protocol):
    """A health check: a stable name (label-safe), a kind, and `run`."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Kind: ...

    def run(self, ctx: Context) -> CheckResult: ...


@dataclass(frozen=True)
class RuleCheck:
    """A check made of a function from the context to a Finding."""

    name: str
    kind: Kind
    rule: Callable[[Context], Finding]

    def run(self, ctx: Context) -> CheckResult:
        return CheckResult.of(self.name, self.kind, self.rule(ctx))
