"""A queue of TrainingJob keys, after client-go's workqueue: deduplicated, delayed, one at a time.

A key added while queued is queued once; a key added while being reconciled is reconciled
again afterwards (never twice at once); `add_after` wakes a key later (backoff, deadlines,
TTL); failures back off exponentially per key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

from carina.operators.runtime import metrics

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys of type K (the operator's are (namespace, name) pairs)."""

    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0):
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._base, self._max = base_delay, max_delay

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)
        metrics.queue_depth.set(len(self._dirty))

    def add_after(self, key: K, delay: float) -> None:
        """Add the key after `delay` seconds (an earlier pending wake-up wins)."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: K) -> None:
        """Add the key again after an exponential per-key backoff (a failed reconcile)."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self._base * 2**n, self._max))

    def succeeded(self, key: K) -> None:
        self._failures.pop(key, None)

    def forget(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    async def get(self) -> K:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        metrics.queue_depth.set(len(self._dirty))
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def __len__(self) -> int:
        return len(self._dirty)
