"""The `sweep` workload: `run_sweep(config, context)` -> ExitCode.

Launch: a TrainingJob with `workload.sweep` (examples/sweep.yaml); each worker is one Ray
node, worker 0 the head and the driver. Alone, for a try on one machine:

    CARINA_SPEC=spec.json CARINA_CHECKPOINT_URI=file:///tmp/sweep python -m carina.workloads

Roles. Worker 0's local rank 0 starts the head, waits for every worker's node, runs Ray Tune
over the trials the ledger lacks (`driver.py`), writes the report (`report.py`) and stops its
node. Every other worker's local rank 0 joins the head and stays until the head has gone; it
exits 0 if the head left a complete report, else TRANSIENT (the gang restarts and resumes).
Other local ranks have nothing to do and exit 0 at once.

SIGTERM (preemption, a restart of the gang) stops this worker's node and exits PREEMPTED:
every finished trial is in the ledger already, and trials that were running start again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from carina.workloads.config import ExitCode, SweepConfig
from carina.workloads.contract import TerminationMessage, WorkerContext
from carina.workloads.errors import WorkerError
from carina.workloads.runtime.storage import Store, open_store
from carina.workloads.runtime.telemetry import Telemetry, log_event, write_termination_message
from carina.workloads.sweep.cluster import (
    NodePlan,
    RayNode,
    node_plan,
    reachable,
    require_ray,
    wait_for,
)
from carina.workloads.sweep.report import REPORT_KEY, build_report, write_report
from carina.workloads.sweep.trials import Ledger, grid

NODES_TIMEOUT = 600.0  # seconds the head waits for every worker's node to join
HEAD_TIMEOUT = 600.0  # seconds a worker waits for the head to listen
HEAD_START_ATTEMPTS = 3  # `ray start --head` tries before the gang restarts


def checkpoint_root(ctx: WorkerContext) -> str:
    if not ctx.checkpoint_uri:
        raise WorkerError(ExitCode.BAD_CONFIG, "CARINA_CHECKPOINT_URI is not set (the ledger)")
    return ctx.checkpoint_uri.rstrip("/")


def report_complete(store: Store) -> bool:
    raw = store.get_bytes(REPORT_KEY)
    return raw is not None and bool(json.loads(raw).get("complete"))


def run_sweep(cfg: SweepConfig, ctx: WorkerContext) -> ExitCode:
    """Run (or resume) a sweep; the worker contract's entry point for `sweep`."""
    if ctx.local_rank != 0:
        return ExitCode.SUCCEEDED  # one Ray node per worker: local rank 0 is it
    require_ray()
    store = open_store(checkpoint_root(ctx))
    plan = node_plan(ctx, cfg, os.environ)
    node: RayNode | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        log_event("preempted", signal=signum, role="head" if plan.head else "worker")
        if node is not None:
            node.stop(grace=5.0)
        sys.stdout.flush()
        os._exit(int(ExitCode.PREEMPTED))

    signal.signal(signal.SIGTERM, stop)
    if plan.head:
        log_event("ray_head", address=plan.address, cpus=plan.cpus, tempDir=plan.temp_dir)
        node = RayNode(plan, os.environ)
        for _ in range(HEAD_START_ATTEMPTS - 1):
            if _listening(plan, node):
                break
            node.stop()  # a port it was given was taken meanwhile: fresh ones, once more
            plan = node_plan(ctx, cfg, os.environ)
            log_event("ray_head_restart", address=plan.address)
            node = RayNode(plan, os.environ)
        try:
            code = _drive(cfg, ctx, plan, node, store)
        finally:
            node.stop()
    else:
        wait_for(
            lambda: reachable(plan.host, plan.port),
            HEAD_TIMEOUT,
            f"the Ray head at {plan.address}",
        )
        log_event("ray_worker", head=plan.address, cpus=plan.cpus, tempDir=plan.temp_dir)
        node = RayNode(plan, os.environ)
        try:
            code = _follow(plan, node, store)
        finally:
            node.stop()
    if code == ExitCode.SUCCEEDED:  # Ray's logs stay behind only for a sweep that went wrong
        for folder in (plan.temp_dir, plan.temp_dir + "-tune"):
            shutil.rmtree(folder, ignore_errors=True)
    return code


def _listening(plan: NodePlan, node: RayNode) -> bool:
    """Wait until the head's GCS accepts connections (True) or its node has exited (False)."""
    wait_for(
        lambda: reachable(plan.host, plan.port) or not node.alive(),
        HEAD_TIMEOUT,
        f"the Ray head at {plan.address}",
    )
    return node.alive()


def _follow(plan: NodePlan, node: RayNode, store: Store) -> ExitCode:
    """A worker node's life: until the head has gone (done) or this node died (a crash)."""
    misses = 0
    while node.alive() and misses < 3:
        time.sleep(1.0)
        misses = 0 if reachable(plan.host, plan.port) else misses + 1
    # The head writes the report before it stops its node: either way out, a complete report
    # means the sweep is done (this node may have stopped first, its GCS gone).
    if report_complete(store):
        log_event("done", role="worker")
        return ExitCode.SUCCEEDED
    if not node.alive():
        raise WorkerError(ExitCode.TRANSIENT, "this worker's Ray node exited mid-sweep")
    raise WorkerError(ExitCode.TRANSIENT, f"the Ray head at {plan.address} went away mid-sweep")


def _drive(
    cfg: SweepConfig, ctx: WorkerContext, plan: NodePlan, node: RayNode, store: Store
) -> ExitCode:
    """The head's driver: wait for the nodes, run the missing trials, write the report."""
    import ray

    from carina.workloads.sweep.driver import run_tune

    trials = grid(cfg)
    ledger = Ledger(store)
    telemetry = Telemetry(ctx.job, ctx.namespace, ctx.rank, len(trials), ctx.metrics_port)

    def progress() -> None:
        done = [r for r in ledger.results.values() if r.get("loss") is not None]
        telemetry.step_g.set(len(ledger.results))
        if done:
            telemetry.loss_g.set(min(float(r["loss"]) for r in done))

    progress()
    todo = [t for t in trials if not ledger.finished(t)]
    log_event("sweep", trials=len(trials), finished=len(trials) - len(todo), todo=len(todo))
    if todo:
        os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
        wait_for(
            lambda: reachable(plan.host, plan.port) or not node.alive(),
            120,
            f"the Ray head at {plan.address}",
        )
        if not node.alive():
            raise WorkerError(ExitCode.TRANSIENT, "the Ray head exited as it started")
        on_term = signal.getsignal(signal.SIGTERM)
        ray.init(address=plan.address, log_to_driver=False, logging_level=logging.WARNING)
        # Ray's driver installs a crash handler for SIGTERM (it aborts, exit 134); a preempted
        # head must stop its node and exit 75 instead.
        signal.signal(signal.SIGTERM, on_term)
        try:
            wait_for(
                lambda: _alive_nodes(ray) >= ctx.replicas,
                NODES_TIMEOUT,
                f"{ctx.replicas} Ray nodes to join",
                interval=1.0,
            )
            log_event("ray_cluster", nodes=_alive_nodes(ray), resources=ray.cluster_resources())
            _check_fits(cfg, ray.cluster_resources())
            storage = Path(plan.temp_dir + "-tune")
            run_tune(cfg, todo, ledger, storage, f"{ctx.job}-{ctx.restart}", progress)
        finally:
            ray.shutdown()
    report = build_report(cfg, list(ledger.results.values()), len(trials))
    write_report(store, report)
    fit = report["fit"]
    log_event(
        "report",
        uri=f"{store.uri}/sweep",
        trials=report["trialsFinished"],
        a=fit["a"] if fit else None,
        b=fit["b"] if fit else None,
    )
    best = [g["bestLoss"] for g in report["groups"] if g["bestLoss"] is not None]
    write_termination_message(
        TerminationMessage(
            checkpoint_step=len(ledger.results),
            checkpoint_uri=f"{store.uri}/sweep",
            step=len(ledger.results),
            total_steps=len(trials),
            loss=min(best) if best else None,
        ),
        ctx.termination_log,
    )
    telemetry.close()
    return ExitCode.SUCCEEDED if report["complete"] else ExitCode.TRANSIENT


def _alive_nodes(ray: Any) -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def _check_fits(cfg: SweepConfig, resources: dict[str, float]) -> None:
    """Refuse a trial no node can hold (it would wait forever)."""
    if cfg.trial_gpus > resources.get("GPU", 0.0):
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.trialGpus ({cfg.trial_gpus}) exceeds the GPUs of the Ray cluster "
            f"({resources.get('GPU', 0.0)})",
        )
    if cfg.trial_cpus > resources.get("CPU", 0.0):
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"config.trialCpus ({cfg.trial_cpus}) exceeds the CPUs of the Ray cluster "
            f"({resources.get('CPU', 0.0)})",
        )
