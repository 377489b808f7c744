"""The embedded platform's state: one SQLite file (WAL) that survives `carina up` restarts.

A job is stored as three JSON texts: metadata and spec (written by the API) and status
(written by the substrate), so neither writer can overwrite the other's change. Reads
assemble the object from the stored texts without parsing them, which keeps `get` and
`list` cheap (see docs/benchmarks.md).

A write that fails for want of disk space raises StorageFull and marks the store full
(`full`); reads go on working. `check_writable` says whether the folder has room again.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from carina.platform.api.spec_changes import SpecChangeRefused, refused_changes
from carina.platform.api.types import API_VERSION, KIND, TrainingJobSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT 'Pending',
    deleting INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    runtime TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS workers (
    uid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    restart INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL,
    started_at REAL NOT NULL,
    stopping INTEGER NOT NULL DEFAULT 0,
    dir TEXT NOT NULL,
    PRIMARY KEY (uid, idx)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (uid, id);
CREATE TABLE IF NOT EXISTS samples (
    uid TEXT NOT NULL,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    loss REAL,
    tokens_per_second REAL,
    PRIMARY KEY (uid, step)
);
"""


class Conflict(Exception):
    """The job already exists (create) or changed underneath (update)."""


class StorageFull(Exception):
    """A write failed because the disk (or quota) holding the state folder has no room."""


def storage_full(exc: BaseException) -> bool:
    """Whether an error means "no space left": SQLITE_FULL, ENOSPC or EDQUOT."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# What `check_writable` writes and removes: more than a transaction of a few rows needs.
_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class JobRow:
    """One stored job, its JSON texts still as text."""

    namespace: str
    name: str
    uid: str
    created: float
    phase: str
    deleting: bool
    metadata: str
    spec: str
    status: str
    runtime: str

    def object_json(self) -> str:
        """The TrainingJob as the API serves it, assembled without re-encoding."""
        return (
            f'{{"apiVersion":"{API_VERSION}","kind":"{KIND}","metadata":{self.metadata},'
            f'"spec":{self.spec},"status":{self.status}}}'
        )

    def manifest(self) -> dict[str, Any]:
        """The TrainingJob as a dict (for planning)."""
        obj: dict[str, Any] = json.loads(self.object_json())
        return obj


@dataclass(frozen=True)
class WorkerRow:
    """A worker process the substrate started (or adopted after a restart)."""

    uid: str
    index: int
    restart: int
    pid: int
    pid_start: str
    started_at: float
    stopping: bool
    dir: str


@dataclass(frozen=True)
class Event:
    time: float
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Sample:
    step: int
    time: float
    loss: float | None
    tokens_per_second: float | None


_JOB_COLUMNS = "namespace, name, uid, created, phase, deleting, metadata, spec, status, runtime"
# JobRow.object_json in SQL (the API version and kind as parameters, in that order).
_OBJECT_SQL = (
    """'{"apiVersion":"' || ? || '","kind":"' || ? || '","metadata":' || metadata"""
    """ || ',"spec":' || spec || ',"status":' || status || '}'"""
)


_PAGES_KEPT = 64  # pages each thread keeps for asking again (all dropped beyond)


class Store:
    """Thread-safe access to the SQLite file: one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Moves on with every commit through this Store, from any thread (next() on a count
        # is atomic): with each connection's `PRAGMA data_version` (commits of any other
        # connection) it tells a cached page whether anything was written since.
        self._writes = itertools.count()
        self._written = 0
        self._db().executescript(SCHEMA)
        self.full: str | None = None  # why the last write failed while the disk is full

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            finally:
                self._written = next(self._writes)
                # A failed COMMIT (SQLITE_FULL) may leave the transaction open, or SQLite may
                # have rolled it back already: end it either way, or the connection stays
                # stuck in it after the disk has room again.
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
        except (sqlite3.Error, OSError) as exc:
            if storage_full(exc):
                self.full = f"{exc} (writing {self.path})"
                raise StorageFull(self.full) from exc
            raise
        self.full = None

    def check_writable(self) -> None:
        """Raise StorageFull while the store is full and its folder still has no room."""
        if self.full is None:
            return
        probe = self.path.with_name(".write-probe")
        try:
            with probe.open("wb") as f:
                f.write(bytes(_PROBE_BYTES))
        except OSError as exc:
            if storage_full(exc):
                raise StorageFull(self.full) from None
            raise
        finally:
            probe.unlink(missing_ok=True)
        self.full = None

    # ------------------------------------------------------------ jobs

    def create_job(self, namespace: str, manifest: dict[str, Any], now: float) -> JobRow:
        """Store a new job (metadata gains uid, generation, creation time); Conflict if taken."""
        meta = dict(manifest["metadata"])
        name = meta["name"]
        uid = str(uuid.uuid4())
        meta.update(
            namespace=namespace,
            uid=uid,
            generation=1,
            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            resourceVersion="1",
        )
        spec = manifest["spec"]
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO jobs (namespace, name, uid, created, priority, metadata, spec)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        namespace,
                        name,
                        uid,
                        now,
                        int(spec.get("priority", 0)),
                        json.dumps(meta, separators=(",", ":")),
                        json.dumps(spec, separators=(",", ":")),
                    ),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"trainingjob {namespace}/{name} already exists") from None
        job = self.get_job(namespace, name)
        assert job is not None
        return job

    def get_job(self, namespace: str, name: str) -> JobRow | None:
        row = (
            self._db()
            .execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE namespace = ? AND name = ?",
                (namespace, name),
            )
            .fetchone()
        )
        return _job(row) if row else None

    def list_jobs(
        self, namespace: str | None, limit: int | None = None, after: str = ""
    ) -> list[JobRow]:
        """Jobs by name (one namespace, or all); `after` is the last name of the previous page."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        args: list[Any] = []
        if namespace is not None:
            sql += " WHERE namespace = ? AND name > ?"
            args += [namespace, after]
        sql += " ORDER BY namespace, name"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_job(r) for r in self._db().execute(sql, args)]

    def page_json(self, namespace: str, limit: int, after: str = "") -> tuple[str, str | None]:
        """A page of a namespace's jobs by name: the objects' JSON joined by commas, and the
        last name when more follow (else None).

        SQLite assembles the page itself, in one step: row by row, each fetched row would
        hand Python's GIL over to the event loop's thread and back. The same page asked again
        with nothing written meanwhile (a console or many clients polling) is the text
        assembled last time: each thread keeps its last pages, stamped with what was written.
        """
        db = self._db()
        # Read before the query: a write landing in between leaves a stamp that is already
        # stale, so the page is assembled again next time (never served older than it is).
        stamp = (db.execute("PRAGMA data_version").fetchone()[0], self._written)
        pages: dict[tuple[str, int, str], tuple[object, tuple[str, str | None]]] | None
        pages = getattr(self._local, "pages", None)
        if pages is None or len(pages) > _PAGES_KEPT:
            pages = self._local.pages = {}
        cached = pages.get((namespace, limit, after))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        page = self._assemble_page(db, namespace, limit, after)
        pages[(namespace, limit, after)] = (stamp, page)
        return page

    @staticmethod
    def _assemble_page(
        db: sqlite3.Connection, namespace: str, limit: int, after: str
    ) -> tuple[str, str | None]:
        count, last, items = db.execute(
            "SELECT count(*), max(name), group_concat(object, ',') FROM ("
            f"  SELECT name, {_OBJECT_SQL} AS object FROM jobs"
            "   WHERE namespace = ? AND name > ? ORDER BY name LIMIT ?)",
            (API_VERSION, KIND, namespace, after, limit),
        ).fetchone()
        more = count == limit and (
            db.execute(
                "SELECT 1 FROM jobs WHERE namespace = ? AND name > ? LIMIT 1", (namespace, last)
            ).fetchone()
            is not None
        )
        return items or "", last if more else None

    def jobs_in_admission_order(self) -> list[JobRow]:
        """Every job, highest priority first, then oldest first (the capacity queue's order)."""
        rows = self._db().execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY priority DESC, created, namespace, name"
        )
        return [_job(r) for r in rows]

    def update_spec(self, namespace: str, name: str, changes: dict[str, Any]) -> JobRow | None:
        """Merge `changes` into the spec and bump metadata.generation; None if absent.

        Raises SpecChangeRefused (naming each field and rule) for a change of what cannot
        change on a created job (`spec_changes.SPEC_CHANGE_RULES`), as the API server would.
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT metadata, spec FROM jobs WHERE namespace = ? AND name = ?",
                (namespace, name),
            ).fetchone()
            if row is None:
                return None
            meta, spec = json.loads(row[0]), json.loads(row[1])
            if all(spec.get(k) == v for k, v in changes.items()):
                return self.get_job(namespace, name)
            # What cannot change on a created job, as the API server's transition rules say.
            # A stored spec the models refuse (an older version's) is judged by the engine
            # (plan_invalid), not here: suspending it must still work.
            refused: list[tuple[str, str]] = []
            try:
                before = TrainingJobSpec.model_validate(spec)
                after = TrainingJobSpec.model_validate({**spec, **changes})
            except ValidationError:
                pass
            else:
                refused = refused_changes(before, after)
            if refused:
                raise SpecChangeRefused(refused)
            spec.update(changes)
            meta["generation"] = int(meta.get("generation", 1)) + 1
            meta["resourceVersion"] = str(int(meta.get("resourceVersion", "1")) + 1)
            db.execute(
                "UPDATE jobs SET metadata = ?, spec = ? WHERE namespace = ? AND name = ?",
                (
                    json.dumps(meta, separators=(",", ":")),
                    json.dumps(spec, separators=(",", ":")),
                    namespace,
                    name,
                ),
            )
        return self.get_job(namespace, name)

    def mark_deleting(self, namespace: str, name: str, now: float) -> JobRow | None:
        """Set metadata.deletionTimestamp; the substrate stops workers, then `remove_job`."""
        with self._tx() as db:
            row = db.execute(
                "SELECT metadata FROM jobs WHERE namespace = ? AND name = ?", (namespace, name)
            ).fetchone()
            if row is None:
                return None
            meta = json.loads(row[0])
            meta.setdefault(
                "deletionTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            )
            db.execute(
                "UPDATE jobs SET deleting = 1, metadata = ? WHERE namespace = ? AND name = ?",
                (json.dumps(meta, separators=(",", ":")), namespace, name),
            )
        return self.get_job(namespace, name)

    def remove_job(self, uid: str) -> None:
        """Forget a job and everything recorded about it."""
        with self._tx() as db:
            for table in ("jobs", "workers", "events", "samples"):
                db.execute(f"DELETE FROM {table} WHERE uid = ?", (uid,))

    def write_status(self, uid: str, status: dict[str, Any]) -> None:
        """The substrate's one status write per reconcile."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status = ?, phase = ? WHERE uid = ?",
                (json.dumps(status, separators=(",", ":")), status.get("phase", "Pending"), uid),
            )

    def write_runtime(self, uid: str, runtime: dict[str, Any]) -> None:
        """The substrate's own bookkeeping for a job (the gang's rendezvous port)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET runtime = ? WHERE uid = ?",
                (json.dumps(runtime, separators=(",", ":")), uid),
            )

    # ------------------------------------------------------------ workers

    def add_worker(self, worker: WorkerRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    worker.uid,
                    worker.index,
                    worker.restart,
                    worker.pid,
                    worker.pid_start,
                    worker.started_at,
                    int(worker.stopping),
                    worker.dir,
                ),
            )

    def workers(self, uid: str) -> list[WorkerRow]:
        rows = self._db().execute(
            "SELECT uid, idx, restart, pid, pid_start, started_at, stopping, dir FROM workers"
            " WHERE uid = ? ORDER BY idx",
            (uid,),
        )
        return [WorkerRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows]

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version)."""
        return int(self._db().execute("PRAGMA data_version").fetchone()[0])

    def uids_with_workers(self) -> set[str]:
        return {r[0] for r in self._db().execute("SELECT DISTINCT uid FROM workers")}

    def set_stopping(self, uid: str, index: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE workers SET stopping = 1 WHERE uid = ? AND idx = ?", (uid, index))

    def remove_worker(self, uid: str, index: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE uid = ? AND idx = ?", (uid, index))

    # ------------------------------------------------------------ events and samples

    def add_event(self, uid: str, now: float, type_: str, reason: str, message: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO events (uid, time, type, reason, message) VALUES (?, ?, ?, ?, ?)",
                (uid, now, type_, reason, message),
            )

    def events(self, uid: str, limit: int = 1000) -> list[Event]:
        rows = self._db().execute(
            "SELECT time, type, reason, message FROM"
            " (SELECT * FROM events WHERE uid = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (uid, limit),
        )
        return [Event(*r) for r in rows]

    def add_sample(self, uid: str, sample: Sample) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?)",
                (uid, sample.step, sample.time, sample.loss, sample.tokens_per_second),
            )

    def last_sample_step(self, uid: str) -> int | None:
        row = (
            self._db()
            .execute("SELECT step FROM samples WHERE uid = ? ORDER BY time DESC LIMIT 1", (uid,))
            .fetchone()
        )
        return int(row[0]) if row else None

    def samples(self, uid: str, since: float = 0.0, until: float = float("inf")) -> list[Sample]:
        rows = self._db().execute(
            "SELECT step, time, loss, tokens_per_second FROM samples"
            " WHERE uid = ? AND time >= ? AND time <= ? ORDER BY step",
            (uid, since, until if until != float("inf") else 1e18),
        )
        return [Sample(*r) for r in rows]


def _job(row: tuple[Any, ...]) -> JobRow:
    return JobRow(
        namespace=row[0],
        name=row[1],
        uid=row[2],
        created=row[3],
        phase=row[4],
        deleting=bool(row[5]),
        metadata=row[6],
        spec=row[7],
        status=row[8],
        runtime=row[9],
    )
