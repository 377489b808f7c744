"""The embedded substrate's loop: observe workers, plan with the shared functions, apply.

Each pass reads every job once, observes its worker processes, asks the lifecycle engine the
operator asks (`planning.engine.plan`) for the status, the action and the events, performs the
action's effects idempotently, posts the events and writes status once. Progress comes by the
operator's channel: each pass scrapes global rank 0's /metrics (`http://127.0.0.1:<port>`,
the port worker 0 was given, kept in the job's runtime record) and reads it with the same
parser (`planning.progress.read_scrape`); a worker that has exited gives its final step in its
termination message, as a pod does. Only the capacity count is a local concern. Because
everything it needs is in SQLite and the run folders, a restarted `carina up` simply carries
on: live workers are adopted by pid, workers that died with the machine show up as failures
and restart from the checkpoint.
"""

from __future__ import annotations

import http.client
import json
import logging
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from carina.platform.api.manifests import field_errors
from carina.platform.api.quantity import parse_quantity
from carina.platform.api.types import (
    FINISHED_PHASES,
    CheckpointStatus,
    DamagedCheckpoint,
    Progress,
    QueueingStatus,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.embedded.capacity import assign_gpus
from carina.platform.embedded.history_capture import record
from carina.platform.embedded.launcher import (
    Launcher,
    RunPaths,
    checkpoint_uri,
    free_ports,
    run_paths,
    worker_env,
)
from carina.platform.embedded.observe import observe
from carina.platform.embedded.store import JobRow, Sample, Store, WorkerRow
from carina.platform.history.store import HistoryStore
from carina.platform.planning.actions import (
    Action,
    CreateWorkers,
    DeleteJob,
    FailJob,
    Nothing,
    RestartGang,
    SuspendWorkers,
    Wait,
)
from carina.platform.planning.admission import Capacity
from carina.platform.planning.dependencies import (
    CLEAR,
    Gate,
    Reference,
    Upstream,
    gate,
    references,
)
from carina.platform.planning.engine import ADMITTED, JobAdmission, Plan, plan, plan_invalid
from carina.platform.planning.observed import ObservedWorker, parse_checkpoint
from carina.platform.planning.progress import checkpoint_at, read_scrape
from carina.platform.planning.queue_view import (
    estimate_starts,
    eta,
    gang_usage,
    job_admission,
    job_info,
    machine_queue,
    next_queueing,
)
from carina.platform.planning.queueing import JobInfo, schedule

log = logging.getLogger("carina.local")

# A scrape of a worker's /metrics: short, since a pass waits for it (no answer: no news).
SCRAPE_TIMEOUT_SECONDS = 1.0
_SCRAPE_LIMIT_BYTES = 4 << 20
# Straight to the worker on this machine, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_metrics(url: str) -> str | None:
    """The text a worker's metrics endpoint serves, or None when it does not answer."""
    try:
        with _DIRECT.open(url, timeout=SCRAPE_TIMEOUT_SECONDS) as resp:
            body: bytes = resp.read(_SCRAPE_LIMIT_BYTES)
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return body.decode("utf-8", "replace")


def spec_problems(error: ValueError) -> str:
    """What is wrong with a spec, by field path (`spec.resources.cpu: must be ...`)."""
    if isinstance(error, ValidationError):
        return "; ".join(str(e) for e in field_errors(error))
    return str(error)


# The name the machine's one implicit ClusterQueue goes by in status.queueing and the API.
MACHINE_QUEUE = "this-machine"


@dataclass(frozen=True)
class SubstrateConfig:
    state_dir: Path
    capacity: Capacity
    stop_grace_seconds: float = 60.0
    interval_seconds: float = 0.5
    history_log_lines: int = 200  # of each worker's log, kept in the job's history record


class Substrate:
    """Runs TrainingJobs as local worker processes; `run_forever` in a thread."""

    def __init__(
        self,
        store: Store,
        launcher: Launcher,
        config: SubstrateConfig,
        history: HistoryStore | None = None,
    ) -> None:
        self.store = store
        self.history = history  # where finished and deleted jobs are recorded (None: nowhere)
        self.launcher = launcher
        self.config = config
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stop_sent: dict[tuple[str, int], float] = {}  # (uid, index) -> SIGTERM time
        self._quiet: dict[str, tuple[tuple[object, ...], datetime | None]] = {}
        self._parsed: dict[str, tuple[tuple[str, str], TrainingJob]] = {}
        self._statuses: dict[str, tuple[str, TrainingJobStatus]] = {}
        self._refs: dict[str, tuple[str, tuple[Reference, ...]]] = {}
        self._seen_version = -1
        self._busy = True
        self._wrote = False
        # How a pass reads rank 0's /metrics (tests put a stand-in here).
        self.fetch_metrics: Callable[[str], str | None] = fetch_metrics

    # ------------------------------------------------------------ the loop

    def run_forever(self) -> None:
        """Reconcile every job until `shutdown`; one failing job never stops the others."""
        while not self._stop.is_set():
            try:
                self.reconcile_all()
            except Exception:
                log.exception("reconcile pass failed")
            self._wake.wait(self.config.interval_seconds)
            self._wake.clear()

    def wake(self) -> None:
        """Look now (a job was created or changed)."""
        self._wake.set()

    def shutdown(self, stop_workers: bool = True) -> None:
        """Stop the loop; with `stop_workers`, SIGTERM every worker and wait for its save."""
        self._stop.set()
        self._wake.set()
        if not stop_workers:
            return
        rows = [
            w for job in self.store.jobs_in_admission_order() for w in self.store.workers(job.uid)
        ]
        live = [w for w in rows if self.launcher.alive(w)]
        for w in live:
            self.launcher.signal(w, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_grace_seconds
        while live and time.monotonic() < deadline:
            time.sleep(0.2)
            live = [w for w in live if self.launcher.alive(w)]
        for w in live:
            self.launcher.signal(w, signal.SIGKILL)
        self.launcher.reap()

    def reconcile_all(self, now: datetime | None = None) -> None:
        """One pass over every job, in admission order.

        What goes wrong with one job stays with it: a stored spec the models refuse fails that
        job (InvalidSpec, naming the field), and any other error is logged and tried again
        next pass, while the other jobs go on.

        A job with no live worker whose spec, deletion and admission are as they were when
        its last pass decided "nothing to do (until T)" is skipped: with a thousand stored
        jobs a pass costs what the few active ones cost.
        """
        now = now or datetime.now(UTC)
        self.launcher.reap()
        # Nothing can have changed when no one else wrote, no worker runs and no timer is due:
        # an idle embedded platform then costs one PRAGMA per pass.
        version = self.store.data_version()
        due = min((until for _, until in self._quiet.values() if until), default=None)
        if version == self._seen_version and not self._busy and (due is None or now < due):
            return
        jobs = self.store.jobs_in_admission_order()
        holding = self.store.uids_with_workers()
        invalid: dict[str, str] = {}  # uid -> what is wrong with its spec
        gates = self._gates(jobs)
        queueing = self._admission(jobs, holding, invalid, now, gates)
        for row in jobs:
            admitted, q = queueing.get(row.uid, (ADMITTED, None))
            upstream = gates.get(row.uid, CLEAR)
            key = (row.metadata, row.spec, row.deleting, admitted, q, upstream)
            live = row.uid in holding and any(
                self.launcher.alive(w) for w in self.store.workers(row.uid)
            )
            quiet = self._quiet.get(row.uid)
            if not live and quiet and quiet[0] == key and (quiet[1] is None or now < quiet[1]):
                continue
            self._quiet.pop(row.uid, None)
            try:
                if row.uid in invalid:
                    rest: Wait | None = self._fail_invalid(row, invalid[row.uid], now)
                else:
                    rest = self.reconcile(row, now, admitted, q, upstream)
            except Exception:
                log.exception("reconcile of %s/%s failed", row.namespace, row.name)
                continue
            if rest is not None and not live:
                self._quiet[row.uid] = (key, rest.until)
        for uid in set(self._quiet) - {row.uid for row in jobs}:
            del self._quiet[uid]
        self._seen_version = version
        # A status this pass wrote is news to the admission decision of the next (a victim's
        # recorded exit releases its quota), and SQLite's data_version counts only others'
        # writes: look again.
        self._busy = self._wrote or any(row.uid not in self._quiet for row in jobs)
        self._wrote = False

    def _gates(self, jobs: list[JobRow]) -> dict[str, Gate]:
        """Each job's upstream gate this pass (`planning.dependencies.gate`), by uid.

        Every pass looks again, so a job whose upstream finished starts in the next pass.
        A job being deleted is gone for the jobs that wait on it.
        """
        rows = {(r.namespace, r.name): r for r in jobs if not r.deleting}
        views: dict[tuple[str, str], Upstream | None] = {}

        def lookup(namespace: str) -> Callable[[str], Upstream | None]:
            def view(name: str) -> Upstream | None:
                key = (namespace, name)
                if key not in views:
                    row = rows.get(key)
                    try:
                        views[key] = None if row is None else Upstream.of(self._stored_job(row))
                    except ValueError:  # a spec the models refuse: it fails on its own
                        views[key] = None
                return views[key]

            return view

        gates: dict[str, Gate] = {}
        for row in rows.values():
            try:
                job = self._stored_job(row)
                if not self._references(row, job):
                    continue
                gates[row.uid] = gate(job, lookup(row.namespace))
            except ValueError:
                continue  # its own reconcile reports the bad spec or status
        return gates

    def _stored_job(self, row: JobRow) -> TrainingJob:
        """The job with its last written status (both parsed once per change)."""
        return self._parse(row).model_copy(update={"status": self._stored_status(row)})

    def _references(self, row: JobRow, job: TrainingJob) -> tuple[Reference, ...]:
        """The upstreams the job names, worked out once per change of its spec."""
        cached = self._refs.get(row.uid)
        if cached is None or cached[0] != row.spec:
            cached = (row.spec, references(job))
            self._refs[row.uid] = cached
        return cached[1]

    def _admission(
        self,
        jobs: list[JobRow],
        holding: set[str],
        invalid: dict[str, str],
        now: datetime,
        gates: Mapping[str, Gate] | None = None,
    ) -> dict[str, tuple[JobAdmission, QueueingStatus]]:
        """The machine's one queue: every job's admission and `status.queueing` this pass.

        The same function decides as on a cluster (`planning.queueing.schedule`), with one
        implicit ClusterQueue the size of the machine: first come first served, and a higher
        priority preempts a lower one, whose workers save a checkpoint before they go. A job
        waiting for an upstream job (`gates`) is no candidate: it takes no quota.
        """
        capacity = self.config.capacity
        queue = machine_queue(capacity.cpus, capacity.memory_bytes, capacity.gpus, MACHINE_QUEUE)
        views: dict[str, tuple[TrainingJob, JobInfo]] = {}
        for row in jobs:
            if row.deleting:
                continue
            try:
                job = self._parse(row)
                gang_usage(job)  # a request it cannot count fails the job, naming the field
            except ValueError as exc:  # pydantic's ValidationError is one too
                invalid[row.uid] = spec_problems(exc)
                continue
            try:
                status = self._stored_status(row)
            except ValueError:
                continue  # its own reconcile reports it; the other jobs are decided
            held = (
                status is not None
                and status.queueing is not None
                and (status.queueing.admission is not None)
            )
            stopping = row.phase in FINISHED_PHASES or job.spec.suspend
            if stopping and not held:
                continue
            if not held and not (gates or {}).get(row.uid, CLEAR).clear:
                continue  # its upstreams first
            gone = row.uid not in holding or not any(
                self.launcher.alive(w) for w in self.store.workers(row.uid)
            )
            job = job.model_copy(update={"status": status})
            info = job_info(
                job,
                f"{row.namespace}/{row.name}",  # how messages name it
                queue=MACHINE_QUEUE,
                priority=job.spec.priority,
                workers_gone=gone,
                covered=queue.quotas.keys(),
            )
            if stopping and info.held is not None and not info.evicting:
                info = replace(info, evicting="Finished", active=False)
            views[row.uid] = (job, info)
        infos = [v[1] for v in views.values()]
        decisions = schedule([queue], infos, now.timestamp())
        finishes = {v[1].key: when for v in views.values() if (when := eta(v[0])) is not None}
        starts = estimate_starts([queue], infos, decisions, finishes, now)
        out: dict[str, tuple[JobAdmission, QueueingStatus]] = {}
        for uid, (job, info) in views.items():
            q = next_queueing(
                job,
                info.key,
                decisions,
                now,
                local_queue=job.spec.queue,
                cluster_queue=MACHINE_QUEUE,
                priority=info.priority,
                grace_seconds=self.config.stop_grace_seconds,
                estimated_start=starts.get(info.key),
            )
            status = (job.status or TrainingJobStatus()).model_copy(update={"queueing": q})
            out[uid] = (job_admission(job.model_copy(update={"status": status}), True), q)
        return out

    def _stored_status(self, row: JobRow) -> TrainingJobStatus | None:
        """The job's last written status, parsed once per write (admission and the job's
        reconcile both read it each pass; the planning functions copy before they change)."""
        if row.status == "{}":
            return None
        cached = self._statuses.get(row.uid)
        if cached is not None and cached[0] == row.status:
            return cached[1]
        status = TrainingJobStatus.model_validate(json.loads(row.status))
        self._statuses[row.uid] = (row.status, status)
        return status

    def _parse(self, row: JobRow) -> TrainingJob:
        """The job as a model, parsed once per change of its metadata or spec."""
        cached = self._parsed.get(row.uid)
        if cached is not None and cached[0] == (row.metadata, row.spec):
            return cached[1]
        job = TrainingJob.model_validate(row.manifest())
        self._parsed[row.uid] = ((row.metadata, row.spec), job)
        return job

    # ------------------------------------------------------------ one job

    def reconcile(
        self,
        row: JobRow,
        now: datetime,
        admission: JobAdmission = ADMITTED,
        queueing: QueueingStatus | None = None,
        upstream: Gate = CLEAR,
    ) -> Wait | None:
        """Observe, plan, apply, write status once; a Wait when there is nothing to do."""
        paths = run_paths(self.config.state_dir, row.namespace, row.name, row.uid)
        if row.deleting:
            self._stop_workers(row.uid)
            if not self.store.workers(row.uid):
                self.record_history(row, deleted_at=now)
                self.store.remove_job(row.uid)
                self._parsed.pop(row.uid, None)
                self._statuses.pop(row.uid, None)
                self._refs.pop(row.uid, None)
            return None
        try:
            job = self._parse(row)
        except ValueError as exc:
            return self._fail_invalid(row, spec_problems(exc), now)
        workers, acked = self._observe(row.uid, paths)

        previous = self._stored_status(row)
        progress, checkpoint, damaged, rank_seconds = self._scrape(row, job, paths, now)
        if acked is not None and (checkpoint is None or acked.step > checkpoint.step):
            checkpoint = acked
        known = previous
        if queueing is not None:  # this pass's admission decision joins the status
            known = (previous or TrainingJobStatus()).model_copy(update={"queueing": queueing})
        decided = plan(
            job.model_copy(update={"status": known}),
            workers,
            now,
            admission,
            progress,
            checkpoint,
            damaged,
            acked=acked,
            rank_seconds=rank_seconds,
            upstream=upstream,
        )
        action = decided.action
        # Workers are made from the planned status: its inputs are what their spec file reads.
        planned = job.model_copy(update={"status": decided.status})
        self._apply(action, planned, row, workers, paths, now)
        if isinstance(action, DeleteJob):
            return None
        self._write(row, decided, previous, now)
        self._sample(row.uid, decided.status.progress, now)
        finished = decided.status.phase in FINISHED_PHASES
        if finished and (previous is None or previous.phase not in FINISHED_PHASES):
            self.record_history(self.store.get_job(row.namespace, row.name) or row)
        if isinstance(action, Nothing):
            return Wait(None)
        return action if isinstance(action, Wait) else None

    def record_history(self, row: JobRow, deleted_at: datetime | None = None) -> None:
        """Write the job's history record (when it finishes, and just before it goes)."""
        if self.history is not None:
            record(
                self.history,
                self.store,
                self.config.state_dir,
                row,
                self.config.history_log_lines,
                deleted_at,
            )

    def _fail_invalid(self, row: JobRow, problems: str, now: datetime) -> Wait:
        """Fail a job whose stored spec the models refuse, and stop its workers.

        Only an older version, or a hand-edited database, stores such a spec: the API refuses
        it. A job that had already finished keeps its status.
        """
        paths = run_paths(self.config.state_dir, row.namespace, row.name, row.uid)
        self._observe(row.uid, paths)  # forgets exited workers, SIGKILLs after the grace
        self._stop_workers(row.uid)
        try:
            previous = TrainingJobStatus.model_validate(json.loads(row.status))
        except ValueError:
            previous = None
        self._write(row, plan_invalid(previous, problems, now), previous, now)
        if previous is None or previous.phase not in FINISHED_PHASES:
            self.record_history(self.store.get_job(row.namespace, row.name) or row)
        return Wait(None)

    def _observe(
        self, uid: str, paths: RunPaths
    ) -> tuple[list[ObservedWorker], CheckpointStatus | None]:
        """Observed workers, and the newest checkpoint a stopped worker acknowledged in its last
        word before it went: a stopped worker that has exited is gone (as a deleted pod)."""
        observed = []
        acked: CheckpointStatus | None = None
        for w in self.store.workers(uid):
            alive = self.launcher.alive(w)
            if w.stopping and not alive:
                last = observe(w, False, paths)
                said = parse_checkpoint(last.termination_message, last.finished_at)
                if said is not None and (acked is None or said.step > acked.step):
                    acked = said
                self._forget(w)
                continue
            if w.stopping and alive:
                sent = self._stop_sent.setdefault((w.uid, w.index), time.monotonic())
                if time.monotonic() - sent > self.config.stop_grace_seconds:
                    self.launcher.signal(w, signal.SIGKILL)
            observed.append(observe(w, alive, paths))
        return observed, acked

    def _forget(self, worker: WorkerRow) -> None:
        self._stop_sent.pop((worker.uid, worker.index), None)
        self.store.remove_worker(worker.uid, worker.index)

    def _stop_workers(self, uid: str, indices: set[int] | None = None) -> None:
        """SIGTERM (the checkpoint grace period starts); exited workers go at once."""
        for w in self.store.workers(uid):
            if indices is not None and w.index not in indices:
                continue
            if not self.launcher.alive(w):
                self._forget(w)
            elif not w.stopping:
                self.launcher.signal(w, signal.SIGTERM)
                self._stop_sent[(w.uid, w.index)] = time.monotonic()
                self.store.set_stopping(w.uid, w.index)

    def _apply(
        self,
        action: Action,
        job: TrainingJob,
        row: JobRow,
        workers: list[ObservedWorker],
        paths: RunPaths,
        now: datetime,
    ) -> None:
        """Perform the action's effects on this machine (idempotent)."""
        t = now.timestamp()
        if isinstance(action, CreateWorkers):
            self._create(job, row, action, paths)
        elif isinstance(action, RestartGang):
            old = {w.index for w in workers if w.restart < action.restart and not w.deleting}
            if old:
                self._stop_workers(row.uid, old)
        elif isinstance(action, FailJob | SuspendWorkers):
            if any(w.active for w in workers):
                self._stop_workers(row.uid)
        elif isinstance(action, DeleteJob):
            self.store.mark_deleting(row.namespace, row.name, t)

    def _create(
        self, job: TrainingJob, row: JobRow, action: CreateWorkers, paths: RunPaths
    ) -> None:
        runtime = json.loads(row.runtime)
        if runtime.get("restart") != action.restart or "masterPort" not in runtime:
            # A new gang gets a fresh rendezvous port: the old one may linger in TIME_WAIT.
            runtime = {"restart": action.restart, "masterPort": free_ports(1)[0]}
        gpus = self._assign_gpus(job, row, runtime, action.indices)
        ports = free_ports(len(action.indices))
        # Where each worker serves its metrics: worker 0's is the one a pass scrapes.
        metrics_ports: dict[str, int] = runtime.setdefault("metricsPorts", {})
        metrics_ports.update({str(i): p for i, p in zip(action.indices, ports, strict=True)})
        self.store.write_runtime(row.uid, runtime)
        self.launcher.prepare(job, paths)
        threads = max(1, int(parse_quantity(job.spec.resources.cpu)))
        for index, metrics_port in zip(action.indices, ports, strict=True):
            env = worker_env(
                job,
                paths,
                index,
                action.restart,
                runtime["masterPort"],
                metrics_port,
                threads,
                gpus.get(str(index), ()),
            )
            self.store.add_worker(self.launcher.start(row.uid, index, action.restart, env, paths))

    def _assign_gpus(
        self, job: TrainingJob, row: JobRow, runtime: dict[str, Any], indices: tuple[int, ...]
    ) -> dict[str, list[int]]:
        """Each new worker's own GPUs (CUDA_VISIBLE_DEVICES), kept in the job's runtime record.

        Admission has already counted them; this picks which, avoiding those that workers of
        other jobs hold.
        """
        per_worker = job.spec.resources.gpus
        assigned: dict[str, list[int]] = runtime.setdefault("gpus", {})
        if not per_worker:
            return assigned
        holding = self.store.uids_with_workers()
        held = {
            g
            for other in self.store.jobs_in_admission_order()
            if other.uid != row.uid and other.uid in holding
            for ids in json.loads(other.runtime).get("gpus", {}).values()
            for g in ids
        }
        held |= {g for i, ids in assigned.items() if int(i) not in indices for g in ids}
        new = assign_gpus(self.config.capacity.gpus, held, per_worker, len(indices))
        for index, ids in zip(indices, new, strict=False):
            assigned[str(index)] = ids
        return assigned

    def _scrape(
        self,
        row: JobRow,
        job: TrainingJob,
        paths: RunPaths,
        now: datetime,
    ) -> tuple[
        Progress | None,
        CheckpointStatus | None,
        tuple[DamagedCheckpoint, ...],
        Mapping[int, float] | None,
    ]:
        """What global rank 0 says on its /metrics: progress, the newest checkpoint, the
        damaged checkpoints its resume passed over, and every rank's compute time per step
        (stragglers are named by rank and worker; every worker's node is `localhost`).

        The operator reads a pod's endpoint with the same parser. Nothing while worker 0 does
        not run or does not answer: status keeps the last progress it knows, and a worker
        that has exited gives its final step in its termination message.
        """
        runtime = json.loads(row.runtime)
        port = (runtime.get("metricsPorts") or {}).get("0")
        rank0 = any(
            w.index == 0 and w.restart == runtime.get("restart") and self.launcher.alive(w)
            for w in self.store.workers(row.uid)
        )
        text = self.fetch_metrics(f"http://127.0.0.1:{port}/metrics") if port and rank0 else None
        if text is None:
            return None, None, (), None
        scrape = read_scrape(text, now)
        saved = scrape.checkpoint_step
        checkpoint = checkpoint_at(checkpoint_uri(job, paths), saved, now) if saved else None
        return scrape.progress, checkpoint, scrape.damaged, scrape.rank_seconds

    def _sample(self, uid: str, progress: Progress | None, now: datetime) -> None:
        """A new step in status (scraped, or rank 0's final word) joins the sample store."""
        if progress is None or not progress.step:
            return
        if progress.step == self.store.last_sample_step(uid):
            return
        when = (progress.updated_at or now).timestamp()
        self.store.add_sample(
            uid, Sample(progress.step, when, progress.loss, progress.tokens_per_second)
        )

    def _write(
        self,
        row: JobRow,
        decided: Plan,
        previous: TrainingJobStatus | None,
        now: datetime,
    ) -> None:
        """Post the plan's events and write its status, when it changed."""
        status = decided.status
        # The GPU-time account alone is no news: it goes out with the next change, which
        # books the whole interval (the state it accounts for is what was last written).
        same = (
            previous is not None
            and status.model_copy(update={"goodput": previous.goodput}) == previous
        )
        if same and not decided.events:
            return
        for event in decided.events:
            self.store.add_event(row.uid, now.timestamp(), event.type, event.reason, event.message)
        wire: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.store.write_status(row.uid, wire)
        self._wrote = True
