"""Opening the job history the settings name, and pruning it by age and count.

Both backends keep their history this way: the local one in SQLite under the state folder
(unless `CARINA_HISTORY_URL` says otherwise), the kubernetes one where `CARINA_HISTORY_URL`
points (PostgreSQL on a cluster), or nowhere.
"""

from __future__ import annotations

import logging
import threading
import time

from carina.platform.controlplane.settings import Settings
from carina.platform.history.store import HistoryStore

log = logging.getLogger("carina.history")

SECONDS_PER_DAY = 86_400.0


def open_history(settings: Settings) -> HistoryStore | None:
    """The history store the settings name (its schema brought up to date), or None."""
    url = settings.resolved_history_url()
    return HistoryStore(url) if url else None


def prune_once(history: HistoryStore, settings: Settings, now: float | None = None) -> int:
    """Apply the retention settings once; how many records went."""
    days = settings.history_retention_days
    return history.prune(
        time.time() if now is None else now,
        None if days is None else days * SECONDS_PER_DAY,
        settings.history_retention_count,
    )


class Pruner:
    """A thread that applies the retention settings every `history_prune_seconds`."""

    def __init__(self, history: HistoryStore, settings: Settings) -> None:
        self.history = history
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="carina-history-prune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                gone = prune_once(self.history, self.settings)
                if gone:
                    log.info("pruned %d job history records", gone)
            except Exception:
                log.exception("pruning the job history failed; trying again later")
            self._stop.wait(self.settings.history_prune_seconds)
        self.history.close()
