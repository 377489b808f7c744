"""Watching jobs: what a watcher receives, and the local backend's one feed of store changes.

A watcher gets `ADDED` for each job there when it starts, then `ADDED`, `MODIFIED` and
`DELETED` as jobs change, each with the job's JSON as GET serves it. Events reach a watcher
through an asyncio queue on the server's event loop; whatever produces them (a thread that
reads the store, or one that follows the Kubernetes API server's watch) hands them over with
`call_soon_threadsafe`, so no watcher ever blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carina.platform.embedded.store import Store

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

log = logging.getLogger("carina.server")


@dataclass(frozen=True)
class WatchEvent:
    """One change: its type and the job's JSON text (as GET serves it)."""

    type: str
    namespace: str
    name: str
    object: str


class JobWatch:
    """One watcher's events, in order: a namespace's jobs, or one job of it (`name`)."""

    def __init__(self, namespace: str, name: str | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[WatchEvent] = asyncio.Queue()

    def wants(self, namespace: str, name: str) -> bool:
        """Whether an event about namespace/name is for this watcher."""
        return namespace == self.namespace and self.name in (None, name)

    def put_threadsafe(self, event: WatchEvent) -> None:
        """Hand an event over from any thread (dropped once the watcher is closed)."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: no one is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def next(self) -> WatchEvent:
        """The next event (waits for one; cancelling the wait loses nothing)."""
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events; whatever feeds this watcher lets it go."""
        self.closed = True


class StoreFeed:
    """One thread for every watcher of a local backend: it notices the store's commits
    (SQLite's data_version, one PRAGMA a poll) and only then reads the jobs and compares.

    The thread starts with the first watcher and keeps its own SQLite connection (the
    store's one connection per thread), so data_version compares like with like. While no
    one watches it reads nothing but its stop flag.
    """

    def __init__(self, store: Store, interval_seconds: float = 0.2) -> None:
        self.store = store
        self.interval = interval_seconds
        self._watchers: list[JobWatch] = []
        # (namespace, name) -> object JSON as last read; None while no one watches
        self._jobs: dict[tuple[str, str], str] | None = None
        self._lock = threading.Lock()  # watchers and the snapshot change together
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, watch: JobWatch) -> None:
        """Start feeding `watch`, beginning with ADDED for the jobs it sees (blocking: the
        first watcher reads the store; call it off the event loop)."""
        with self._lock:
            if self._jobs is None:
                self._jobs = self._read()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="carina-watch", daemon=True)
                self._thread.start()
            for (namespace, name), text in sorted(self._jobs.items()):
                if watch.wants(namespace, name):
                    watch.put_threadsafe(WatchEvent(ADDED, namespace, name, text))
            self._watchers.append(watch)

    def stop(self) -> None:
        """End the thread (the server is stopping)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _read(self) -> dict[tuple[str, str], str]:
        return {(r.namespace, r.name): r.object_json() for r in self.store.list_jobs(None)}

    def _run(self) -> None:
        seen: int | None = None  # None: read at the next poll, whatever the version says
        while not self._stop.wait(self.interval):
            try:
                with self._lock:
                    self._watchers = [w for w in self._watchers if not w.closed]
                    if not self._watchers:
                        self._jobs = seen = None  # no one to tell: read nothing
                        continue
                version = self.store.data_version()
                if version != seen:
                    self._publish()
                    seen = version
            except Exception:
                log.exception("watching the store failed; trying again")

    def _publish(self) -> None:
        """Read the jobs and tell each watcher what changed since the last read."""
        with self._lock:  # a watcher added meanwhile starts from this read, not an older one
            jobs = self._read()
            before = self._jobs or {}
            events = [
                WatchEvent(DELETED, ns, name, text)
                for (ns, name), text in before.items()
                if (ns, name) not in jobs
            ]
            for key, text in jobs.items():
                old = before.get(key)
                if old != text:
                    events.append(WatchEvent(ADDED if old is None else MODIFIED, *key, text))
            self._jobs = jobs
            for event in events:
                for watch in self._watchers:
                    if watch.wants(event.namespace, event.name):
                        watch.put_threadsafe(event)
