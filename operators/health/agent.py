"""The node health agent's loop: one round every `interval` seconds.

A round:
1. reads the Node (its labels, annotations and condition; the read also times the API server
   and compares clocks with its `Date` header);
2. runs the light checks;
3. lists the pods bound to the node and, when none holds a GPU and a full run is due
   (`schedule.full_run_due`), runs the invasive checks; their results stand until the next
   full run, so a failed probe keeps counting between full runs;
4. applies the fault file (`faults.py`) and decides the verdict (`verdict.decide`);
5. writes labels and condition where they changed (`node.py`), stamping
   `carina.dev/health-full-pass` after a passing full run (at least one invasive check ran, and
   every one that ran passed), and sets the metrics.

A check that raises is reported UNSUPPORTED with the error (a flaw of the agent is no fault of
the node); a round that cannot reach the API server still runs the checks and sets the metrics.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from carina.operators.health import metrics
from carina.operators.health.checks import (
    Check,
    CheckResult,
    Context,
    Finding,
    Kind,
    Outcome,
    Runner,
    run_command,
    unsupported,
)
from carina.operators.health.faults import FaultFileError, apply_faults, read_faults
from carina.operators.health.gpu import light_checks as gpu_checks
from carina.operators.health.host import GENERIC, generic_checks
from carina.operators.health.node import NodeApi, NodeView, condition_patch, label_patch, node_view
from carina.operators.health.probes import invasive_checks
from carina.operators.health.schedule import full_run_due, gpu_pods, parse_time
from carina.operators.health.verdict import Verdict, decide
from carina.platform.api.health import (
    CHECK_REQUESTED_ANNOTATION,
    FULL_PASS_LABEL,
    HEALTH_LABEL,
)

log = logging.getLogger(__name__)

FAULT_FILE_CHECK = "fault-file"  # the result that reports an unreadable fault file


@dataclass(frozen=True)
class AgentConfig:
    """What the agent is told (`python -m carina.operators.health --help`)."""

    node: str
    interval: float = 60.0
    full_interval: float = 6 * 3600.0
    fault_file: Path | None = None
    disk_paths: tuple[str, ...] = ("/",)
    python: str = field(default_factory=lambda: sys.executable)


def default_checks(config: AgentConfig) -> list[Check]:
    """Every check, in the order the verdict blames them: generic, GPU, invasive."""
    return [*generic_checks(config.disk_paths), *gpu_checks(), *invasive_checks()]


def full_run_passed(results: Sequence[CheckResult]) -> bool:
    """At least one invasive check ran, and every one that ran passed."""
    ran = [r for r in results if r.kind is Kind.INVASIVE and r.outcome != Outcome.UNSUPPORTED]
    return bool(ran) and all(r.outcome == Outcome.PASS for r in ran)


@dataclass(frozen=True)
class RoundReport:
    """What a round found and did."""

    verdict: Verdict
    full_run: str | None  # why the invasive checks ran this round (None: they did not)
    gpu_pods: tuple[str, ...]  # the pods that kept the node busy
    write_error: str | None  # None: the Node says the verdict (or could not be read at all)
    node_read: bool


class Agent:
    """Runs the checks on one node and writes the verdict onto its Node."""

    def __init__(
        self,
        config: AgentConfig,
        api: NodeApi,
        checks: Sequence[Check] | None = None,
        runner: Runner = run_command,
        clock: Callable[[], float] = time.time,
    ):
        self.config, self.api, self.runner, self.clock = config, api, runner, clock
        self.checks = list(checks if checks is not None else default_checks(config))
        self.last_full: float | None = None
        self.full_results: list[CheckResult] = []

    def _run(self, check: Check, ctx: Context) -> CheckResult:
        began = time.monotonic()
        try:
            result = check.run(ctx)
        except Exception as exc:
            log.exception("check %s raised", check.name)
            result = CheckResult.of(check.name, check.kind, unsupported(f"check raised {exc!r}"))
        metrics.check_seconds.labels(check.name).set(time.monotonic() - began)
        return result

    def _busy(self, node: str) -> tuple[str, ...] | None:
        """The pods holding the node's GPUs (None: unknown, so treated as busy)."""
        try:
            return tuple(gpu_pods(self.api.pods_on(node)))
        except (ApiException, HTTPError, OSError, ValueError) as exc:
            log.warning("cannot list the pods on %s: %s", node, exc)
            return None

    def _faults(self) -> tuple[dict[str, Finding], list[CheckResult]]:
        try:
            return read_faults(self.config.fault_file), []
        except FaultFileError as exc:
            bad = CheckResult.of(FAULT_FILE_CHECK, Kind.LIGHT, Finding(Outcome.WARN, str(exc)))
            return {}, [bad]

    def round(self) -> RoundReport:
        """One round: check, decide, write."""
        now = self.clock()
        node, reading = self.api.read(self.config.node)
        view = node_view(node) if node is not None else None
        if view is not None and self.last_full is None:
            self.last_full = parse_time(view.labels.get(FULL_PASS_LABEL))
        ctx = Context(
            node=self.config.node,
            labels=dict(view.labels) if view else {},
            api=reading,
            run=self.runner,
            python=self.config.python,
        )
        results = [self._run(c, ctx) for c in self.checks if c.kind is Kind.LIGHT]

        full_run: str | None = None
        busy: tuple[str, ...] = ()
        if view is not None:
            pods = self._busy(self.config.node)
            busy = pods if pods is not None else ("(pods unknown)",)
            requested = parse_time(view.annotations.get(CHECK_REQUESTED_ANNOTATION))
            due = full_run_due(now, self.last_full, self.config.full_interval, requested)
            if due and pods == ():
                full_run = due
                invasive = [c for c in self.checks if c.kind is Kind.INVASIVE]
                self.full_results = [self._run(c, ctx) for c in invasive]
                self.last_full = now

        faults, fault_trouble = self._faults()
        kinds = {c.name: c.kind for c in self.checks}
        final = apply_faults([*results, *self.full_results, *fault_trouble], faults, kinds)
        verdict = decide(final, required=GENERIC)
        full_pass_at = int(now) if full_run and full_run_passed(final) else None
        metrics.record(self.config.node, verdict.health, final)

        if view is None:
            return RoundReport(verdict, None, (), reading.error or "node not read", False)
        error = self._write(view, verdict, full_pass_at, now)
        return RoundReport(verdict, full_run, busy, error, True)

    def _write(
        self, view: NodeView, verdict: Verdict, full_pass_at: int | None, now: float
    ) -> str | None:
        """Patch condition and labels where they changed; the error, if a write failed.

        The condition first: whoever acts on the verdict label (the operator, moving a gang)
        then already finds the words that explain it.
        """
        try:
            if (status := condition_patch(view, verdict, now)) is not None:
                self.api.patch_status(view.name, status)
            if (labels := label_patch(view, verdict, full_pass_at)) is not None:
                self.api.patch_node(view.name, labels)
        except ApiException as exc:
            return f"writing node {view.name}: {exc.status} {exc.reason}"
        except (HTTPError, OSError) as exc:
            return f"writing node {view.name}: {exc}"
        previous = view.labels.get(HEALTH_LABEL)
        if previous != verdict.health.value:
            log.info("node %s: %s (%s)", view.name, verdict.health.value, verdict.message)
        return None

    def run_forever(self, stop: threading.Event) -> None:
        """Rounds every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            report = self.round()
            if report.write_error:
                log.warning("verdict not written: %s", report.write_error)
            stop.wait(self.config.interval)
