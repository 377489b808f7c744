"""The history store: SQLite (the embedded platform) or PostgreSQL (a cluster), one interface.

`HistoryStore(url)` opens `sqlite:///PATH` or `postgresql://...` and applies the migrations
the database lacks. Every method blocks (the control plane calls them in a worker thread);
each thread has its own connection, as SQLite wants and psycopg allows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.platform.history.migrations import MIGRATIONS, SCHEMA_TABLE, Migration
from carina.platform.history.query import HistoryQuery, encode_continue
from carina.platform.history.record import HistoryRecord, HistorySummary

log = logging.getLogger("carina.history")

# Any constant: the key of the PostgreSQL advisory lock two servers migrating at once share.
_MIGRATION_LOCK = 0x63617269
_SUMMARY_FIELDS = set(HistorySummary.model_fields)
_DELETE_BATCH = 500


class HistoryUnavailable(Exception):
    """The history database did not answer (or its URL names no database we can open)."""


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistorySummary]
    continue_: str | None


class _Cursor:
    """A cursor taking `?` parameters on both dialects (psycopg wants `%s`)."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self._cursor = cursor
        self._postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._postgres:
            sql = sql.replace("%", "%%").replace("?", "%s")
        return self._cursor.execute(sql, tuple(params))

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._cursor.fetchall()
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row


def describe_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class HistoryStore:
    """Records by uid; listings per namespace, newest end first."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.postgres = False
            self.path: Path | None = Path(url.removeprefix("sqlite:///")).expanduser()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.postgres = True
            self.path = None
        else:
            raise ValueError(
                f"history URL {describe_url(url)!r}: must begin sqlite:/// or postgresql://"
            )
        self._local = threading.local()
        if migrate:
            self.migrate()

    # ------------------------------------------------------------ connections

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.postgres and conn.closed:
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> Any:
        if not self.postgres:
            assert self.path is not None
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise HistoryUnavailable(
                f"history database {describe_url(self.url)} did not answer: {exc}"
            ) from None

    @contextmanager
    def _tx(self) -> Iterator[_Cursor]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        conn = self._connection()
        if not self.postgres:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Cursor(conn.cursor(), False)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        import psycopg

        try:
            with conn.transaction(), conn.cursor() as cursor:
                yield _Cursor(cursor, True)
        except psycopg.OperationalError as exc:
            conn.close()  # the next call connects again
            raise HistoryUnavailable(
                f"history database {describe_url(self.url)} did not answer: {exc}"
            ) from None

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------ schema

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply the migrations the database lacks (up to `target`, default all), each once;
        the versions applied now."""
        applied: list[int] = []
        with self._tx() as cur:
            cur.execute(SCHEMA_TABLE)
        for migration in MIGRATIONS:
            if target is not None and migration.version > target:
                break
            if self._apply(migration):
                applied.append(migration.version)
        if applied:
            log.info("history schema at version %d (applied %s)", applied[-1], applied)
        return applied

    def _apply(self, migration: Migration) -> bool:
        with self._tx() as cur:
            if self.postgres:  # two servers starting at once: one migrates, one waits
                cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            cur.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,))
            if cur.fetchone() is not None:
                return False
            for statement in migration.statements:
                cur.execute(statement)
            if migration.step is not None:
                migration.step(cur)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
        return True

    def versions(self) -> list[int]:
        """The migrations this database has, in order."""
        with self._tx() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            return [int(r[0]) for r in cur.fetchall()]

    # ------------------------------------------------------------ records

    def put(self, record: HistoryRecord) -> None:
        """Write a job's record (replacing an earlier one of the same uid)."""
        doc = record.model_dump(mode="json", by_alias=True)
        summary = {k: v for k, v in doc.items() if _snake(k) in _SUMMARY_FIELDS}
        detail = {k: v for k, v in doc.items() if _snake(k) not in _SUMMARY_FIELDS}
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO history_records"
                " (uid, namespace, name, phase, sort_time, recorded_at, summary, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (uid) DO UPDATE SET namespace = excluded.namespace,"
                " name = excluded.name, phase = excluded.phase,"
                " sort_time = excluded.sort_time, recorded_at = excluded.recorded_at,"
                " summary = excluded.summary, detail = excluded.detail",
                (
                    record.uid,
                    record.namespace,
                    record.name,
                    record.phase,
                    record.sort_time(),
                    time.time(),
                    json.dumps(summary, separators=(",", ":")),
                    json.dumps(detail, separators=(",", ":")),
                ),
            )
            cur.execute("DELETE FROM history_labels WHERE uid = ?", (record.uid,))
            for key, value in record.labels.items():
                cur.execute(
                    "INSERT INTO history_labels (uid, key, value) VALUES (?, ?, ?)",
                    (record.uid, key, value),
                )

    def get(self, namespace: str, uid: str) -> HistoryRecord | None:
        """One record of a namespace (None when absent or of another namespace)."""
        with self._tx() as cur:
            cur.execute(
                "SELECT summary, detail FROM history_records WHERE uid = ? AND namespace = ?",
                (uid, namespace),
            )
            row = cur.fetchone()
        if row is None:
            return None
        return HistoryRecord.model_validate({**json.loads(row[0]), **json.loads(row[1])})

    def find(self, uid: str) -> HistoryRecord | None:
        """A record by uid alone (the recorders merge a new capture into it)."""
        with self._tx() as cur:
            cur.execute("SELECT namespace FROM history_records WHERE uid = ?", (uid,))
            row = cur.fetchone()
        return None if row is None else self.get(str(row[0]), uid)

    def list(self, namespace: str, query: HistoryQuery) -> HistoryPage:
        """A page of a namespace's summaries, newest end first, and the next page's token."""
        sql = "SELECT summary, sort_time, uid FROM history_records r WHERE namespace = ?"
        args: list[Any] = [namespace]
        if query.phase is not None:
            sql += " AND phase = ?"
            args.append(query.phase)
        if query.name is not None:
            sql += " AND name = ?"
            args.append(query.name)
        if query.since is not None:
            sql += " AND sort_time >= ?"
            args.append(query.since)
        if query.until is not None:
            sql += " AND sort_time <= ?"
            args.append(query.until)
        for key, value in query.labels:
            sql += (
                " AND EXISTS (SELECT 1 FROM history_labels l"
                " WHERE l.uid = r.uid AND l.key = ? AND l.value = ?)"
            )
            args += [key, value]
        if query.after is not None:
            sql += " AND (sort_time < ? OR (sort_time = ? AND uid < ?))"
            args += [query.after[0], query.after[0], query.after[1]]
        sql += " ORDER BY sort_time DESC, uid DESC LIMIT ?"
        args.append(query.limit + 1)
        with self._tx() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        page = rows[: query.limit]
        token = None
        if len(rows) > query.limit:
            token = encode_continue(float(page[-1][1]), str(page[-1][2]))
        return HistoryPage([HistorySummary.model_validate_json(r[0]) for r in page], token)

    def prune(
        self, now: float, max_age_seconds: float | None, max_per_namespace: int | None
    ) -> int:
        """Forget records that ended more than `max_age_seconds` ago, and all but the newest
        `max_per_namespace` of each namespace; how many went."""
        doomed: set[str] = set()
        with self._tx() as cur:
            if max_age_seconds is not None:
                cur.execute(
                    "SELECT uid FROM history_records WHERE sort_time < ?", (now - max_age_seconds,)
                )
                doomed |= {str(r[0]) for r in cur.fetchall()}
            if max_per_namespace is not None:
                cur.execute(
                    "SELECT uid FROM (SELECT uid, ROW_NUMBER() OVER (PARTITION BY namespace"
                    " ORDER BY sort_time DESC, uid DESC) AS position FROM history_records)"
                    " ranked WHERE position > ?",
                    (max_per_namespace,),
                )
                doomed |= {str(r[0]) for r in cur.fetchall()}
            uids = sorted(doomed)
            for start in range(0, len(uids), _DELETE_BATCH):
                batch = uids[start : start + _DELETE_BATCH]
                marks = ", ".join("?" for _ in batch)
                cur.execute(f"DELETE FROM history_labels WHERE uid IN ({marks})", batch)
                cur.execute(f"DELETE FROM history_records WHERE uid IN ({marks})", batch)
        return len(doomed)


def _snake(alias: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in alias)
