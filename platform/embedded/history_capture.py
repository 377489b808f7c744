"""What the embedded platform keeps of a job when it finishes and when it is deleted.

The substrate records a job in the history store the pass it finishes and again just before
it removes the job (a TTL or a user's delete), from what is still on this machine: the
stored job, its events and metric samples, rank 0's loss curves and each worker's log.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from carina.platform.embedded.launcher import run_paths
from carina.platform.embedded.logs import tail
from carina.platform.embedded.report import read_curves
from carina.platform.embedded.store import JobRow, Store
from carina.platform.history.record import (
    EventSeen,
    HistoryRecord,
    counted_events,
    merged,
    record_of,
)
from carina.platform.history.store import HistoryStore

log = logging.getLogger("carina.local")


def capture(
    store: Store,
    state_dir: Path,
    row: JobRow,
    log_lines: int,
    deleted_at: datetime | None = None,
) -> HistoryRecord:
    """The record of a stored job, with its events, loss curves and log tails."""
    job = row.manifest()
    paths = run_paths(state_dir, row.namespace, row.name, row.uid)
    events = counted_events(
        EventSeen(e.type, e.reason, e.message, datetime.fromtimestamp(e.time, UTC))
        for e in store.events(row.uid)
    )
    samples = store.samples(row.uid)
    curves = read_curves(paths.log(0))
    # Rank 0's log has every step's loss; the samples only the steps a pass scraped.
    loss = sorted(curves.train.items()) or [(s.step, s.loss) for s in samples if s.loss is not None]
    replicas = int(json.loads(row.spec).get("replicas") or 1)
    logs = {str(i): tail(paths.log(i), log_lines) for i in range(replicas) if paths.log(i).exists()}
    return record_of(
        job,
        events=events,
        loss=loss,
        eval_loss=sorted(curves.eval.items()),
        logs=logs,
        deleted_at=deleted_at,
    )


def record(
    history: HistoryStore,
    store: Store,
    state_dir: Path,
    row: JobRow,
    log_lines: int,
    deleted_at: datetime | None = None,
) -> None:
    """Capture the job and write it (over its earlier record); a failure is logged, not raised.

    A history that cannot be written never keeps a job from being deleted: the job goes, and
    the log says its record is missing.
    """
    try:
        later = capture(store, state_dir, row, log_lines, deleted_at)
        history.put(merged(history.find(row.uid), later))
    except Exception:
        log.exception("the history record of %s/%s was not written", row.namespace, row.name)
