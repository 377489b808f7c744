"""The history schema, as numbered migrations applied once each, in order.

Each migration is SQL both SQLite and PostgreSQL accept (`DOUBLE PRECISION`, `TEXT`,
`BIGINT`, `ON CONFLICT`), or, where the dialects differ, a Python step given a cursor that
takes `?` parameters on both. `schema_migrations` records what a database has; the store
applies the rest when it opens (`store.HistoryStore.migrate`), so starting is idempotent.
Never edit a migration that has shipped: add the next one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    """What a migration step gets: `execute(sql with ? parameters)` and `fetchall`."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...] = ()
    step: Callable[[Cursor], None] | None = None  # after the statements


SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


def _labels_of_existing_records(cursor: Cursor) -> None:
    """Fill history_labels from the summaries stored before it existed."""
    cursor.execute("SELECT uid, summary FROM history_records")
    for uid, summary in cursor.fetchall():
        for key, value in (json.loads(summary).get("labels") or {}).items():
            cursor.execute(
                "INSERT INTO history_labels (uid, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (uid, key) DO NOTHING",
                (uid, key, str(value)),
            )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "history records",
        (
            # One row per job (uid): the filtered columns, the summary a listing serves and
            # the rest of the record, both as JSON text. sort_time: when the job ended
            # (finished, else deleted), epoch seconds.
            """
            CREATE TABLE history_records (
                uid TEXT PRIMARY KEY,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                phase TEXT NOT NULL,
                sort_time DOUBLE PRECISION NOT NULL,
                recorded_at DOUBLE PRECISION NOT NULL,
                summary TEXT NOT NULL,
                detail TEXT NOT NULL
            )
            """,
            "CREATE INDEX history_by_namespace ON history_records (namespace, sort_time, uid)",
        ),
    ),
    Migration(
        2,
        "labels as rows, for label selectors",
        (
            """
            CREATE TABLE history_labels (
                uid TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (uid, key)
            )
            """,
            "CREATE INDEX history_labels_by_pair ON history_labels (key, value)",
        ),
        _labels_of_existing_records,
    ),
)

LATEST = MIGRATIONS[-1].version
